//! Session ids, which the gateway mints for `initialize` (so the session is created directly on
//! its owner) and a node mints for a client that reached it directly.

use base64::Engine;

/// A new session id: 192 bits from the operating system's CSPRNG, URL-safe base64 (32 visible
/// ASCII characters).
pub fn mint() -> String {
    let mut bytes = [0u8; 24];
    // The OS generator failing is not recoverable in any useful way: nothing else is safe to
    // hand out as a session credential.
    getrandom::fill(&mut bytes).expect("operating system random generator");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
