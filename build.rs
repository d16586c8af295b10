//! Generates the protobuf types from `proto/im.proto` at build time. protox compiles the
//! schema in Rust, so no `protoc` needs to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/im.proto");
    let descriptors = protox::compile(["proto/im.proto"], ["proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(descriptors)?;
    Ok(())
}
