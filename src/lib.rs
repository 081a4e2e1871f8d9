//! deskhook turns Zoho Desk ticket events into safe, gradual support automation.
//!
//! # Every path through the code
//!
//! A delivery, from the socket to the 200 that tells Zoho it is safe:
//!
//! ```text
//! Zoho Desk ──POST──▶ http::listener (header timeout and size, connection cap)
//!                       ▼
//!                     http::guard (allowlist, per-client budgets, body limit and deadline)
//!                       │  refused ──▶ rejections (redacted log), metrics, 4xx/503
//!                       ▼
//!                     http::webhook ──▶ verify (Zoho JWT | HMAC | Standard Webhooks, replays)
//!                                        ▼
//!                                     event::parse_delivery → TicketEvent[]
//!                                        ▼
//!                                     queue::Queue::accept (dedupe, capacity; a ticket's events
//!                                        │   coalesce while it runs)
//!                                        ├─ memory: queue::MemoryQueue (one pod)
//!                                        └─ Redis:  queue::RedisQueue ──▶ store (connection, scripts)
//!            200 only after this ◀───────┘   (an event that cannot be stored is a 503)
//! ```
//!
//! A job, from the queue to a decision (the same path for a job replayed from the dead letters
//! with `deskhook queue replay`, and for one queued by the reconciler):
//!
//! ```text
//! queue::Queue::claim ──▶ worker (supervised; a panic is a failed step, the worker replaced)
//!                           │  workflow::Run (the event, job id, attempt: the workflow's input)
//!                           ▼
//!                         workflow (one settings snapshot per run)
//!                           │  facts: ticket, latest message, candidate deals (read from zoho,
//!                           │         or the event alone offline)
//!                           │  plan(facts, settings): rule, department, reply… (pure)
//!                           │  execute: each write behind its flag, once per job
//!                           │     ├─ workflow::ledger (memory | Redis): steps already done
//!                           │     └─ zoho clients: token (memory | Redis, shared refresh),
//!                           │        slots (calls in flight, per pod | across pods in Redis)
//!                           ▼
//!                         DecisionReport ──▶ decisions (memory | Redis, the console's list)
//!                           │                 archive (JSONL) ──▶ backtest
//!                           ▼
//!                         worker settles: ack | queue retry with backoff | dead letter
//! ```
//!
//! The other ways in and out:
//!
//! ```text
//! POST /webhook/test (admin) ──▶ queue::Queue::take_ticket ──▶ worker::run_caught ──▶ ack
//! reconcile (one pod, elected in Redis) ──▶ zoho: tickets changed since the last run
//!                                         ──▶ queue::Queue::accept (webhooks Zoho lost)
//! settings: file | environment | kube::watch ──▶ config::SettingsHandle (atomic swap)
//! kube::lease (each pod's report) ──▶ kube::status (one elected writer) ──▶ resource status,
//!      Events; kube::impact replays retained decisions through backtest for status.lastChange
//! deskhook backtest: decisions (admin API | Redis | archive) ──▶ backtest ──▶ table | JSON | CSV
//! deskhook queue: queue::redis::QueueAdmin ──▶ queue::render
//! deskhook serve: app::App::build(config) ──▶ app::App::run(shutdown) ──▶ server (wiring,
//!      the shutdown order)
//! ```
//!
//! Every module owns one noun, and the modules form layers with no cycle between them (a test,
//! `tests/module_cycles.rs`, fails on one): `crd` the resource types, `config` the validated
//! settings and their sources, `verify` signatures, `event` payload parsing, `queue` the
//! hand-off to workers (memory and Redis), `worker` running jobs, `workflow` the automation
//! (and its step ledger), `zoho` the Desk and CRM API clients (and their shared token and
//! slots), `decisions` the recent reports, `archive` their longer history in JSONL files,
//! `backtest` replaying recorded facts under other settings, `reconcile` finding lost webhooks,
//! `http` the routers and the review console, `kube` the resource watcher and its status,
//! `store` the Redis connection every shared store is built on, `limits` the per-client budgets
//! of the public listener, `rejections` the redacted log of refused requests, `names` the one
//! way names are compared, `rollout` the share of tickets each action reaches and its guard, `region` Zoho's hosts, `outbound` where requests may go and the
//! shared HTTP client, `metrics` and `telemetry` observability, `server` the wiring of a
//! running process and `app` its configuration.
#![forbid(unsafe_code)]

pub mod app;
pub mod archive;
pub mod backtest;
pub mod config;
pub mod crd;
pub mod decisions;
pub mod event;
pub mod http;
pub mod kube;
pub mod limits;
pub mod metrics;
pub mod names;
pub mod outbound;
pub mod queue;
pub mod reconcile;
pub mod region;
pub mod rejections;
pub mod rollout;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod verify;
pub mod worker;
pub mod workflow;
pub mod zoho;
