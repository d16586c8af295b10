//! The wire types, generated at build time from `proto/im.proto` (package `im.v1`).

#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/im.v1.rs"));
