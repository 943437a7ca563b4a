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
