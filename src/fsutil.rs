//! Small filesystem helpers shared by every layer (a leaf: depends on nothing
//! in the crate).

use std::path::Path;

/// Create `path` (and parents) and make it 0700.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Read into `buf` from offset `at` until it is full or the file ends;
/// returns the bytes read.
pub fn read_full_at(file: &std::fs::File, buf: &mut [u8], mut at: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], at) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Replace `path` with `data` atomically (a 0600 temporary file next to it,
/// then rename), so a reader sees the old content or the new, never half.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?
        .write_all(data)?;
    std::fs::rename(&tmp, path)
}
