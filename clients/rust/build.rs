//! Generates the wire types from the gateway's own `proto/im.proto` (one schema for the
//! server and every client). protox compiles it in Rust: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto/im.proto");
    let descriptors = protox::compile(["im.proto"], ["../../proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(descriptors)?;
    Ok(())
}
