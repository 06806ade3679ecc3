//! SIP message layer (parsing, framing, sanity). See the crate README.
