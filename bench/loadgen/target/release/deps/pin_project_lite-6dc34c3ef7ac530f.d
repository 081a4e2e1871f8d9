/work/main/bench/loadgen/target/release/deps/pin_project_lite-6dc34c3ef7ac530f.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pin-project-lite-0.2.18/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libpin_project_lite-6dc34c3ef7ac530f.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pin-project-lite-0.2.18/src/lib.rs

/work/main/bench/loadgen/target/release/deps/libpin_project_lite-6dc34c3ef7ac530f.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pin-project-lite-0.2.18/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/pin-project-lite-0.2.18/src/lib.rs:
