//! Collector ingest benchmark: gateways posting batches over HTTP to one or
//! three collectors, on the sled store and on PostgreSQL, in points stored
//! per second. Prints a Markdown table.
//!
//! ```text
//! cargo run --release -p cloud-sync --example ingest_bench [-- --gateways 8 --batches 25 --envelopes 400]
//! ```
//!
//! PostgreSQL comes from `CLOUD_SYNC_BENCH_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`); the benchmark works in a
//! schema of its own and drops it. Three sled collectors are three HTTP
//! servers in one process over one shared store (sled is single-process).
//! Everything (client, collectors, database) shares this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cloud_sync::config::{PostgresConfig, StoreBackend};
use cloud_sync::store::{SledStore, Store};
use cloud_sync::{AppState, Config, Server};
use serde_bytes::ByteBuf;
use telemetry::senml::{encode_pack, RawRecord};
use telemetry::{encode_batch, Envelope, SyncBatch, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token";
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Ingest benchmark of the collector.
#[derive(Debug, Parser)]
struct Args {
    /// Gateways posting at once, each one batch at a time.
    #[arg(long, default_value_t = 8)]
    gateways: u64,
    /// Batches each gateway posts.
    #[arg(long, default_value_t = 25)]
    batches: u64,
    /// Envelopes per batch; each holds three readings.
    #[arg(long, default_value_t = 400)]
    envelopes: u64,
    /// Connections per PostgreSQL collector.
    #[arg(long, default_value_t = 8)]
    pool_size: usize,
}

/// One row of the table.
struct Run {
    store: &'static str,
    collectors: usize,
    points: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bodies = Arc::new(bodies(&args));
    let points_per_run = args.gateways * args.batches * args.envelopes * 3;
    eprintln!(
        "{} gateways x {} batches x {} envelopes x 3 readings = {points_per_run} points per run",
        args.gateways, args.batches, args.envelopes
    );
    let mut runs = Vec::new();
    for collectors in [1, 3] {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
        let servers = shared_store_servers(store, collectors).await?;
        runs.push(run("sled", servers, &bodies, &args).await?);
    }
    let url = std::env::var("CLOUD_SYNC_BENCH_POSTGRES").unwrap_or(DEFAULT_POSTGRES.into());
    match Schema::create(&url).await {
        Ok(schema) => {
            for collectors in [1, 3] {
                schema.reset().await?;
                let mut servers = Vec::new();
                for _ in 0..collectors {
                    let mut config = config();
                    let mut postgres = PostgresConfig::new(&schema.url())?;
                    postgres.pool_size = args.pool_size;
                    config.store = StoreBackend::Postgres(postgres);
                    servers.push(Server::bind(config).await?);
                }
                let servers = serve(servers);
                runs.push(run("postgres", servers, &bodies, &args).await?);
            }
            schema.drop().await?;
        }
        Err(err) => eprintln!("no PostgreSQL at {url} ({err:#}): its rows are left out"),
    }
    print_table(&runs, &args);
    Ok(())
}

/// Every gateway's batches, encoded ahead so that the client costs little.
fn bodies(args: &Args) -> Vec<Vec<Vec<u8>>> {
    (0..args.gateways)
        .map(|g| {
            (0..args.batches)
                .map(|k| {
                    let envelopes = (0..args.envelopes)
                        .map(|i| {
                            let seq = k * args.envelopes + i + 1;
                            let time = 1_700_000_000.0 + seq as f64 / 10.0;
                            let records: Vec<RawRecord> =
                                [("temp", "Cel"), ("hum", "%RH"), ("bat", "V")]
                                    .iter()
                                    .map(|(name, unit)| RawRecord {
                                        name: Some((*name).into()),
                                        time: Some(time),
                                        value: Some(Value::Float(20.0 + (seq % 100) as f64 / 10.0)),
                                        unit: Some((*unit).into()),
                                        ..RawRecord::default()
                                    })
                                    .collect();
                            let device = format!("gw{g}-sensor-{:03}", seq % 50);
                            Envelope {
                                seq,
                                topic: format!("devices/{device}/telemetry"),
                                device_id: device,
                                received_at: 1_700_000_000_000 + seq,
                                payload: ByteBuf::from(encode_pack(&records)),
                            }
                        })
                        .collect();
                    encode_batch(&SyncBatch {
                        gateway_id: format!("gw-{g}"),
                        spool_id: format!("{:032x}", 0xbe00 + g),
                        backlog: (args.batches - k - 1) * args.envelopes,
                        envelopes,
                    })
                })
                .collect()
        })
        .collect()
}

fn config() -> Config {
    let mut config = Config::new("unused", vec![TOKEN.into()]);
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config
}

/// `n` servers in this process over one store.
async fn shared_store_servers(store: Arc<dyn Store>, n: usize) -> anyhow::Result<Servers> {
    let mut servers = Vec::new();
    for _ in 0..n {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let state = AppState::with_store(&config(), Arc::clone(&store))?;
        servers.push(Server::with_state(listener, state)?);
    }
    Ok(serve(servers))
}

/// Running servers and how to stop them.
struct Servers {
    addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

fn serve(servers: Vec<Server>) -> Servers {
    let shutdown = CancellationToken::new();
    let addrs = servers.iter().map(Server::local_addr).collect();
    let tasks = servers
        .into_iter()
        .map(|server| tokio::spawn(server.run(shutdown.clone())))
        .collect();
    Servers {
        addrs,
        shutdown,
        tasks,
    }
}

/// Every gateway posts its batches in order to its collector (gateway g to
/// collector g mod n), all gateways at once; then the stored points are
/// counted through the API and the servers stopped.
async fn run(
    store: &'static str,
    servers: Servers,
    bodies: &Arc<Vec<Vec<Vec<u8>>>>,
    args: &Args,
) -> anyhow::Result<Run> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let gateways: Vec<_> = (0..bodies.len())
        .map(|g| {
            let addr = servers.addrs[g % servers.addrs.len()];
            let (client, bodies) = (client.clone(), Arc::clone(bodies));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for body in &bodies[g] {
                    let sent = Instant::now();
                    let response = client
                        .post(format!("http://{addr}/v1/batches"))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/cbor")
                        .body(body.clone())
                        .send()
                        .await?;
                    anyhow::ensure!(response.status().is_success(), "{}", response.status());
                    response.bytes().await?;
                    latencies.push(sent.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for gateway in gateways {
        latencies.extend(gateway.await.context("gateway task")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();

    let devices = client
        .get(format!("http://{}/v1/devices", servers.addrs[0]))
        .send()
        .await?
        .bytes()
        .await?;
    let devices: serde_json::Value = serde_json::from_slice(&devices)?;
    let points: u64 = devices["devices"]
        .as_array()
        .context("a device list")?
        .iter()
        .filter_map(|d| d["points"].as_u64())
        .sum();
    let expected = args.gateways * args.batches * args.envelopes * 3;
    anyhow::ensure!(
        points == expected,
        "stored {points} points, expected {expected}"
    );

    servers.shutdown.cancel();
    for task in servers.tasks {
        task.await??;
    }
    Ok(Run {
        store,
        collectors: servers.addrs.len(),
        points,
        elapsed,
        latencies,
    })
}

fn print_table(runs: &[Run], args: &Args) {
    println!(
        "| store | collectors | gateways | points | seconds | points/s | batch p50 | batch p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let quantile = |q: f64| {
            let index = ((run.latencies.len() as f64 - 1.0) * q).round() as usize;
            run.latencies.get(index).map_or(String::from("-"), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.0} | {} | {} |",
            run.store,
            run.collectors,
            args.gateways,
            run.points,
            run.elapsed.as_secs_f64(),
            run.points as f64 / run.elapsed.as_secs_f64(),
            quantile(0.5),
            quantile(0.99),
        );
    }
}

/// The benchmark's own schema, dropped at the end.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    async fn create(base: &str) -> anyhow::Result<Schema> {
        let name = format!("bench_{}", hex::encode(rand::random::<[u8; 6]>()));
        let schema = Schema {
            base: base.to_owned(),
            name,
        };
        schema
            .execute(&format!("CREATE SCHEMA {}", schema.name))
            .await?;
        Ok(schema)
    }

    /// Empties the schema between runs (the collectors recreate the tables).
    async fn reset(&self) -> anyhow::Result<()> {
        let name = &self.name;
        self.execute(&format!("DROP SCHEMA {name} CASCADE; CREATE SCHEMA {name}"))
            .await
    }

    async fn drop(self) -> anyhow::Result<()> {
        self.execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await
    }

    fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.base, self.name
        )
    }

    async fn execute(&self, sql: &str) -> anyhow::Result<()> {
        let (client, connection) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls)
            .await
            .context("connect")?;
        tokio::spawn(connection);
        client.batch_execute(sql).await?;
        Ok(())
    }
}
