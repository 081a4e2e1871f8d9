//! deskhook turns Zoho Desk ticket events into safe, gradual support automation.
//!
//! # How one event flows
//!
//! ```text
//! Zoho Desk ──POST──▶ http::listener (header timeout and size, connection cap)
//!                       ▼
//!                     http::guard (allowlist, per-client budgets, body limit and deadline)
//!                       ▼
//!                     http::webhook ──▶ verify (Zoho JWT | HMAC | Standard Webhooks, replays)
//!                                        ▼
//!                                     event::parse_delivery → TicketEvent[]
//!                                        ▼
//!                                     queue (dedupe, one run per ticket at a time, capacity)
//!            200 only after this ◀───────┘
//!                                        ▼
//!                                     worker ──▶ workflow (one settings snapshot per job)
//!                                                   │  facts: ticket, latest message, candidate deals (read)
//!                                                   │  plan(facts, settings): rule, department, reply… (pure)
//!                                                   │  execute: zoho clients, each write behind its flag
//!                                                   ▼
//!                                                decision report + its facts ──▶ decisions (console),
//!                                                   logs, metrics, archive (JSONL) ──▶ backtest
//!
//! settings: file | environment | Kubernetes ──▶ config::SettingsHandle (atomic swap)
//! ```
//!
//! Every module owns one noun: `crd` the resource types, `config` the validated settings and
//! their sources, `verify` signatures, `event` payload parsing, `queue` the hand-off to
//! workers, `worker` running jobs, `workflow` the automation, `zoho` the Desk and CRM API
//! clients, `decisions` the recent reports, `archive` their longer history in JSONL files,
//! `backtest` replaying recorded facts under other settings, `http` the routers and the review console, `kube`
//! the resource watcher and its status, `shared` the state pods share through Redis, `limits`
//! the per-client budgets of the public listener, `rejections` the redacted log of refused
//! requests, `names` the one way names are compared, `rollout`
//! the share of tickets each action reaches and its guard, `region` Zoho's hosts, `metrics` and `telemetry` observability, `server` the
//! wiring of a running process.
#![forbid(unsafe_code)]

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
pub mod region;
pub mod rejections;
pub mod rollout;
pub mod server;
pub mod shared;
pub mod telemetry;
pub mod verify;
pub mod worker;
pub mod workflow;
pub mod zoho;
