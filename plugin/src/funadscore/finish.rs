//! Completion of a frame's result with the fields that funadscore records for
//! every frame: result id, frame size, defect regions and times.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::regions::{find_regions, RegionError, MAX_REGIONS};
use crate::{FunadResult, FunadVerdict};

/// Sets a new result id, the `width × height` frame size, the regions of a
/// scored result, the creation time and the time spent since `started`.
pub fn finish_result(
    result: &mut FunadResult,
    width: u32,
    height: u32,
    started: Instant,
) -> Result<(), RegionError> {
    result.result_id = uuid::Uuid::new_v4();
    result.frame_width = width;
    result.frame_height = height;
    if result.verdict != FunadVerdict::NoModel {
        let found = find_regions(
            &result.map,
            result.map_width,
            result.map_height,
            result.threshold,
            width,
            height,
            MAX_REGIONS,
        )?;
        result.regions = found.regions;
        result.regions_dropped = found.dropped;
    }
    result.creation_time_ns = unix_time_ns(SystemTime::now());
    result.processing_time_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Ok(())
}

/// Nanoseconds since the Unix epoch; 0 for a clock set before 1970.
fn unix_time_ns(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
