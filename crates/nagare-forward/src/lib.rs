pub mod codec;
pub mod server;
