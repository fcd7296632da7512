//! In-server tests (`cargo pgrx test`).
use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn verify_requires_a_key() {
        let result =
            std::panic::catch_unwind(|| Spi::get_one::<pgrx::JsonB>("select auth.verify('a.b.c')"));
        assert!(result.is_err());
    }
}
