/work/main/bench/loadgen/target/release/loadgen: /work/main/bench/loadgen/src/main.rs
