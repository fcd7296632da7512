//! The server secret refresh tokens are derived from: a key file the server creates in its
//! data directory on first use (`pg_session_auth/refresh_token.key`, 32 random bytes, mode
//! 0600). Not a setting — settings are shown to `pg_read_all_settings` and logged when they
//! change — and not in a table, so no dump carries it. Roles that may read server files
//! (`pg_read_server_files`, superusers) can read it. A standby promoted to primary needs the
//! same file for the tokens issued before to keep working: copy it.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::rc::Rc;

use pg_session_auth_core::refresh_token::{RefreshSecret, MIN_SECRET_BYTES};
use pg_session_auth_core::signing::random_bytes;

use crate::errors::{raise, Failure};

/// Relative to the data directory (a backend's working directory).
const KEY_DIRECTORY: &str = "pg_session_auth";
pub const KEY_FILE: &str = "pg_session_auth/refresh_token.key";

thread_local! {
    static SECRET: RefCell<Option<Rc<RefreshSecret>>> = const { RefCell::new(None) };
}

/// The secret (read once per backend: the file never changes once made).
pub fn refresh_secret() -> Rc<RefreshSecret> {
    if let Some(secret) = SECRET.with(|kept| kept.borrow().clone()) {
        return secret;
    }
    let bytes = key_file().unwrap_or_else(|why| {
        raise(Failure::Misconfigured {
            what: format!("the refresh token key file {KEY_FILE} cannot be used: {why}"),
        })
    });
    let secret = Rc::new(RefreshSecret::new(&bytes).unwrap_or_else(|| {
        raise(Failure::Misconfigured {
            what: format!(
                "the refresh token key file {KEY_FILE} holds fewer than {MIN_SECRET_BYTES} bytes"
            ),
        })
    }));
    SECRET.with(|kept| *kept.borrow_mut() = Some(secret.clone()));
    secret
}

/// The key file's contents, creating it when missing. Made under a temporary name and linked
/// into place, which fails if another backend got there first: every backend ends up with
/// the same key.
fn key_file() -> std::io::Result<Vec<u8>> {
    match fs::read(KEY_FILE) {
        Ok(bytes) => return Ok(bytes),
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        Err(_) => {}
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(KEY_DIRECTORY)?;
    let temporary = format!("{KEY_FILE}.{}", std::process::id());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&random_bytes::<32>())?;
    file.sync_all()?;
    drop(file);
    let linked = fs::hard_link(&temporary, KEY_FILE);
    fs::remove_file(&temporary)?;
    match linked {
        Ok(()) => {
            if let Ok(directory) = fs::File::open(Path::new(KEY_DIRECTORY)) {
                directory.sync_all()?;
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    fs::read(KEY_FILE)
}
