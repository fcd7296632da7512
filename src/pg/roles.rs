//! Roles: who the session and the current user are, and what they may do.

use std::ffi::CString;

use pgrx::pg_sys;

use super::compat;

/// The role with this name, if there is one.
pub fn role_oid(name: &str) -> Option<pg_sys::Oid> {
    // A name with a NUL character names no role.
    let name = CString::new(name).ok()?;
    // SAFETY: a valid C string; with `missing_ok` a missing role is InvalidOid, not an error.
    let oid = unsafe { pg_sys::get_role_oid(name.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Whether `role` is a superuser.
pub fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: a lookup through the role cache; an unknown OID is no superuser.
    unsafe { pg_sys::superuser_arg(role) }
}

/// Whether the current user (as `current_user`, inside SECURITY DEFINER functions too) is a
/// superuser.
pub fn current_user_is_superuser() -> bool {
    // SAFETY: a lookup through the role cache for the current user.
    unsafe { pg_sys::superuser() }
}

/// The current user (`current_user`).
pub fn current_user() -> pg_sys::Oid {
    // SAFETY: reads a backend-global that is always set inside a transaction.
    unsafe { pg_sys::GetUserId() }
}

/// The session user (`session_user`), whom `SET ROLE` is checked against.
pub fn session_user() -> pg_sys::Oid {
    // SAFETY: reads a backend-global set at connection start.
    unsafe { pg_sys::GetSessionUserId() }
}

/// Whether `member` has the privileges of `role` (is it, or a member that inherits them).
pub fn has_privileges_of(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    // SAFETY: a lookup through the role membership cache.
    unsafe { pg_sys::has_privs_of_role(member, role) }
}

/// Whether `member` may `SET ROLE` to `role` (what that takes differs between majors; see
/// `compat`).
pub fn can_set_role(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    compat::can_set_role(member, role)
}

/// The name of role `role`, if it exists.
pub fn role_name(role: pg_sys::Oid) -> Option<String> {
    // SAFETY: a syscache lookup that returns NULL (noerr) for a dropped role; the name is
    // copied before anything else runs.
    unsafe {
        let name = pg_sys::GetUserNameFromId(role, true);
        (!name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        })
    }
}
