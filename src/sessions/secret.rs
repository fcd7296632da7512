//! The server secret refresh tokens are derived from: `pg_session_auth.refresh_token_secret`
//! when set (postgresql.conf; superuser-only), else a key file the server creates in its data
//! directory on first use. Neither is in a table, so no dump carries it; a standby promoted
//! to primary needs the same secret (set it, or copy the file) for tokens to keep working.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::rc::Rc;

use pg_session_auth_core::refresh_token::{RefreshSecret, MIN_SECRET_BYTES};
use pg_session_auth_core::signing::random_bytes;

use crate::errors::{raise, Failure};
use crate::gucs;

/// Relative to the data directory (a backend's working directory).
const KEY_DIRECTORY: &str = "pg_session_auth";
const KEY_FILE: &str = "pg_session_auth/refresh_token.key";

/// The secret, with the setting's value it was made from (`None`: the key file).
type KeptSecret = (Option<Vec<u8>>, Rc<RefreshSecret>);

thread_local! {
    static SECRET: RefCell<Option<KeptSecret>> = const { RefCell::new(None) };
}

/// The current secret (re-read when the setting changes).
pub fn refresh_secret() -> Rc<RefreshSecret> {
    let configured = gucs::refresh_token_secret();
    if let Some(secret) = SECRET.with(|kept| {
        kept.borrow()
            .as_ref()
            .filter(|(from, _)| *from == configured)
            .map(|(_, secret)| secret.clone())
    }) {
        return secret;
    }
    let bytes = match &configured {
        Some(bytes) => bytes.clone(),
        None => key_file().unwrap_or_else(|why| {
            raise(Failure::Misconfigured {
                what: format!("the refresh token key file {KEY_FILE} cannot be used: {why}"),
            })
        }),
    };
    let secret = Rc::new(RefreshSecret::new(&bytes).unwrap_or_else(|| {
        raise(Failure::Misconfigured {
            what: format!(
                "pg_session_auth.refresh_token_secret must be at least {MIN_SECRET_BYTES} bytes"
            ),
        })
    }));
    SECRET.with(|kept| *kept.borrow_mut() = Some((configured, secret.clone())));
    secret
}

/// The key file's contents, creating it (32 random bytes, mode 0600) when missing. Made
/// under a temporary name and linked into place, which fails if another backend got there
/// first: every backend ends up with the same key.
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
