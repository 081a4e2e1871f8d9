/work/main/bench/loadgen/target/release/deps/loadgen-a3e81d3b05ec0bf2.d: src/main.rs

/work/main/bench/loadgen/target/release/deps/loadgen-a3e81d3b05ec0bf2: src/main.rs

src/main.rs:
