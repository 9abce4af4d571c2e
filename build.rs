//! `sqlx::migrate!` embeds `migrations/` when the crate compiles; without
//! this, a new or edited migration would not rebuild the crate, and the
//! binary would run with the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
