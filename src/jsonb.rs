//! `jsonb` arguments and results without pgrx's text round trips.
//!
//! pgrx's `JsonB` turns a result into text and back (`jsonb_in`), which costs microseconds per
//! verification, and turns an argument into `serde_json` with `expect`, so any jsonb that
//! `serde_json` cannot represent (a number such as `1e400`, nesting deeper than 128 levels)
//! aborts with `XX000`. Here results are built directly with PostgreSQL's `pushJsonbValue`,
//! and arguments are parsed with errors the caller turns into a documented SQLSTATE.

use std::ffi::{CStr, CString};
use std::ptr;

use pgrx::pg_sys::{self, JsonbIteratorToken as Token};
use pgrx::{FromDatum, IntoDatum};
use serde_json::{Map, Number, Value};

use crate::errors::{invalid_argument, raise};

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

/// Builds a `jsonb` datum (in the current memory context) holding `object`.
pub fn object_to_jsonb(object: &Map<String, Value>) -> pg_sys::Datum {
    let mut state: *mut pg_sys::JsonbParseState = ptr::null_mut();
    // SAFETY: `push` hands pushJsonbValue well-formed values in BEGIN/KEY/VALUE/END order;
    // string values point into `object`, which outlives JsonbValueToJsonb, which copies them.
    unsafe {
        let root = push_object(&mut state, object);
        pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(root))
    }
}

/// # Safety
/// `state` is a parse state for pushJsonbValue (null at the top level).
unsafe fn push_object(
    state: &mut *mut pg_sys::JsonbParseState,
    object: &Map<String, Value>,
) -> *mut pg_sys::JsonbValue {
    // SAFETY (for the block): see the function's contract; scalars are copied by value.
    unsafe {
        pg_sys::pushJsonbValue(state, Token::WJB_BEGIN_OBJECT, ptr::null_mut());
        for (key, value) in object {
            let mut key = string_value(key);
            pg_sys::pushJsonbValue(state, Token::WJB_KEY, &mut key);
            push(state, Token::WJB_VALUE, value);
        }
        pg_sys::pushJsonbValue(state, Token::WJB_END_OBJECT, ptr::null_mut())
    }
}

/// # Safety
/// As [`push_object`]; `token` is `WJB_VALUE` after a key or `WJB_ELEM` in an array.
unsafe fn push(state: &mut *mut pg_sys::JsonbParseState, token: Token::Type, value: &Value) {
    // SAFETY (for the block): see the function's contract.
    unsafe {
        match value {
            Value::Object(object) => {
                push_object(state, object);
            }
            Value::Array(items) => {
                pg_sys::pushJsonbValue(state, Token::WJB_BEGIN_ARRAY, ptr::null_mut());
                for item in items {
                    push(state, Token::WJB_ELEM, item);
                }
                pg_sys::pushJsonbValue(state, Token::WJB_END_ARRAY, ptr::null_mut());
            }
            scalar => {
                let mut scalar = scalar_value(scalar);
                pg_sys::pushJsonbValue(state, token, &mut scalar);
            }
        }
    }
}

fn string_value(text: &str) -> pg_sys::JsonbValue {
    let mut value: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    value.type_ = pg_sys::jbvType::jbvString;
    value.val.string = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
        len: text.len() as i32,
        val: text.as_ptr() as *mut std::ffi::c_char,
    };
    value
}

fn scalar_value(scalar: &Value) -> pg_sys::JsonbValue {
    // SAFETY: an all-zero JsonbValue is a valid (null) value; the fields set below match its type.
    let mut value: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
    match scalar {
        Value::String(text) => return string_value(text),
        Value::Null => value.type_ = pg_sys::jbvType::jbvNull,
        Value::Bool(flag) => {
            value.type_ = pg_sys::jbvType::jbvBool;
            value.val.boolean = *flag;
        }
        Value::Number(number) => {
            value.type_ = pg_sys::jbvType::jbvNumeric;
            value.val.numeric = numeric(number);
        }
        Value::Array(_) | Value::Object(_) => unreachable!("containers are pushed, not scalars"),
    }
    value
}

/// A JSON number as PostgreSQL's `numeric`, with the same value `jsonb_in` would give its
/// text (integers directly; others through serde_json's shortest exact representation).
fn numeric(number: &Number) -> pg_sys::Numeric {
    if let Some(integer) = number.as_i64() {
        // SAFETY: plain conversion, allocates in the current memory context.
        return unsafe { pg_sys::int64_to_numeric(integer) };
    }
    let text = CString::new(number.to_string()).expect("a JSON number has no NUL byte");
    // SAFETY: numeric_in(cstring, typioparam, typmod) with a valid C string; serde_json only
    // holds finite numbers, which numeric accepts.
    unsafe {
        pgrx::direct_function_call::<pg_sys::Datum>(
            pg_sys::numeric_in,
            &[
                text.as_c_str().into_datum(),
                pg_sys::InvalidOid.into_datum(),
                (-1i32).into_datum(),
            ],
        )
        .expect("numeric_in returns a value")
        .cast_mut_ptr()
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
        // SAFETY: the datum is a jsonb (the function's declared argument type); jsonb_out
        // detoasts it and returns a palloc'd C string.
        let text =
            unsafe { pgrx::direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(datum)]) }?;
        Some(JsonbArgument(text.to_string_lossy().into_owned()))
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
