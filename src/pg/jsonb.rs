//! `jsonb` datums built from and read into `serde_json` values without a text round trip
//! on the way out: results are built with PostgreSQL's `pushJsonbValue`.

use std::ffi::{CStr, CString};
use std::ptr;

use pgrx::pg_sys::{self, JsonbIteratorToken as Token};
use pgrx::IntoDatum;
use serde_json::{Map, Number, Value};

/// Builds a `jsonb` datum (in the current memory context) holding `object`.
pub fn object_to_jsonb(object: &Map<String, Value>) -> pg_sys::Datum {
    let mut state: *mut pg_sys::JsonbParseState = ptr::null_mut();
    // SAFETY: a fresh (null) parse state at the top level; `push_object` hands
    // pushJsonbValue well-formed values in BEGIN/KEY/VALUE/END order. String values point
    // into `object`, which outlives JsonbValueToJsonb, which copies them.
    unsafe {
        let root = push_object(&mut state, object);
        pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(root))
    }
}

/// The text form of a `jsonb` datum (as `jsonb_out` writes it).
///
/// # Safety
/// `datum` is a (possibly toasted) `jsonb` value, such as a function's argument of type
/// `jsonb`.
pub unsafe fn jsonb_to_text(datum: pg_sys::Datum) -> Option<String> {
    // SAFETY: the caller's contract; jsonb_out detoasts the value and returns a palloc'd C
    // string, which is copied here.
    let text = unsafe { pgrx::direct_function_call::<&CStr>(pg_sys::jsonb_out, &[Some(datum)]) }?;
    Some(text.to_string_lossy().into_owned())
}

/// # Safety
/// `state` is a parse state for pushJsonbValue (null at the top level).
unsafe fn push_object(
    state: &mut *mut pg_sys::JsonbParseState,
    object: &Map<String, Value>,
) -> *mut pg_sys::JsonbValue {
    // SAFETY: the function's contract; keys and scalars are pushed as
    // values pushJsonbValue copies.
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
    // SAFETY: the function's contract.
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
    // SAFETY: an all-zero JsonbValue is a valid (null) value; the fields set below match
    // its type.
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
