//! Rebuilds the crate when a migration is added: the embedded migrations are read at compile
//! time, and a new file changes no Rust source.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
