//! The durable reference: appending records to a file and fdatasync'ing
//! every batch, the physical limit a durable broker works against.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Appends `count` records of `size` bytes, syncing every `batch`; returns
/// records per second.
pub fn append_and_sync(dir: &Path, count: u64, size: usize, batch: u64) -> std::io::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("ordo-bench-fsync.log");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let record = vec![0x5au8; size];
    let mut buffer = Vec::with_capacity(size * batch as usize);
    let started = Instant::now();
    let mut written = 0;
    while written < count {
        buffer.clear();
        let n = batch.min(count - written);
        for _ in 0..n {
            buffer.extend_from_slice(&record);
        }
        file.write_all(&buffer)?;
        file.sync_data()?;
        written += n;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok(rate)
}
