/work/main/bench/loadgen/target/release/deps/subtle-2609a73fa19a8ec7.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/subtle-2.6.1/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libsubtle-2609a73fa19a8ec7.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/subtle-2.6.1/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libsubtle-2609a73fa19a8ec7.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/subtle-2.6.1/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/subtle-2.6.1/src/lib.rs:
