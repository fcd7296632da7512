//! `jsonb` arguments and results without pgrx's text round trips.
//!
//! pgrx's `JsonB` turns a result into text and back (`jsonb_in`), which costs microseconds per
//! verification, and turns an argument into `serde_json` with `expect`, so any jsonb that
//! `serde_json` cannot represent (a number such as `1e400`, nesting deeper than 128 levels)
//! aborts with `XX000`. Here results are built directly with PostgreSQL's `pushJsonbValue`
//! (`pg/jsonb.rs`), and arguments are parsed with errors the caller turns into a documented
//! SQLSTATE.

use pgrx::pg_sys;
use pgrx::{FromDatum, IntoDatum};
use serde_json::{Map, Value};

use crate::errors::{invalid_argument, raise};
use crate::pg::jsonb::{jsonb_to_text, object_to_jsonb};

/// A JSON object returned as `jsonb`, built directly from its `serde_json` form.
pub struct JsonbObject(pub Map<String, Value>);

pgrx::impl_sql_translatable!(JsonbObject, "jsonb");

// SAFETY: returns the datum built by `into_datum`, as pgrx does for its own `JsonB`.
unsafe impl pgrx::callconv::BoxRet for JsonbObject {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a jsonb datum allocated in the function's memory context.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

impl IntoDatum for JsonbObject {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(object_to_jsonb(&self.0))
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

/// A `jsonb` argument in its text form, parsed on demand.
pub struct JsonbArgument(String);

pgrx::impl_sql_translatable!(JsonbArgument, "jsonb");

impl FromDatum for JsonbArgument {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // SAFETY: the datum is a jsonb (the function's declared argument type).
        let text = unsafe { jsonb_to_text(datum) }?;
        Some(JsonbArgument(text))
    }
}

// SAFETY: as pgrx does for its own `JsonB` (`unbox_arg_using_from_datum`).
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbArgument {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller guarantees a non-NULL argument of our declared type.
        unsafe { arg.unbox_arg_using_from_datum() }
            .unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(
        arg: pgrx::callconv::Arg<'_, 'fcx>,
    ) -> pgrx::nullable::Nullable<Self> {
        // SAFETY: as above, NULL allowed.
        unsafe { arg.unbox_arg_using_from_datum() }.into()
    }
}

impl JsonbArgument {
    /// The argument as a JSON value; `22023` naming `what` when it cannot be represented
    /// (numbers beyond double precision's range, nesting deeper than 128 levels).
    pub fn value_or_raise(&self, what: &str) -> Value {
        serde_json::from_str(&self.0).unwrap_or_else(|error| {
            raise(invalid_argument(
                format!("{what} cannot be read: {}", unreadable_because(&error)),
                Some(
                    "Numbers must fit a double precision float and nesting may be at most 128 levels deep."
                        .to_owned(),
                ),
            ))
        })
    }

    /// The argument as a JSON object; `22023` when it is something else or unreadable.
    pub fn object_or_raise(&self, what: &str) -> Map<String, Value> {
        match self.value_or_raise(what) {
            Value::Object(object) => object,
            _ => raise(invalid_argument(
                format!("{what} must be a JSON object"),
                None,
            )),
        }
    }
}

fn unreadable_because(error: &serde_json::Error) -> &'static str {
    let text = error.to_string();
    if text.starts_with("recursion limit exceeded") {
        "it is nested too deeply"
    } else if text.starts_with("number out of range") {
        "a number is out of range"
    } else {
        "it is not valid JSON"
    }
}
