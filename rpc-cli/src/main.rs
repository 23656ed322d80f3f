//! `rpc`: describe and call any server of the rpc toolkit from the command
//! line. It reads the server's own description (docs/PROTOCOL.md §9) and
//! turns JSON arguments into the method's bincode and the reply back into
//! JSON, so it needs no generated code and no schema files.
//!
//! ```text
//! $ rpc describe 127.0.0.1:7878
//! $ rpc call 127.0.0.1:7878 Calculator.add 2 3
//! 5
//! ```

mod description;
mod omit;
mod options;
mod show;
mod streams;
mod values;
mod wire;

use std::process::ExitCode;

use rpc_core::describe::MethodSchema;
use rpc_core::tls::{ClientTlsConfig, Identity, certificates_from_pem_file};
use rpc_core::{Channel, RpcError};
use serde_reflection::Format;

use description::Service;
use options::{Command, Options};

/// Why `rpc` failed, as its exit code says.
enum Failure {
    /// 2: the command line, or an argument that does not fit its type.
    Usage(String),
    /// 3: no connection, or it broke.
    Transport(RpcError),
    /// 3: the server's description does not make sense.
    Server(String),
    /// 4: the server answered with an error status.
    Status(RpcError),
    /// 1 (0 for a reader that went away): standard output failed.
    Output(std::io::Error),
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        match e {
            // The arguments passed the checks but still do not encode (a
            // map whose keys are not strings, say): the caller's to fix.
            RpcError::Encode { .. } => Failure::Usage(chain(&e)),
            e if e.code().is_some() => Failure::Status(e),
            e => Failure::Transport(e),
        }
    }
}

fn main() -> ExitCode {
    let options = match options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("rpc: {message}");
            }
            eprintln!("{}", options::USAGE);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rpc: cannot start: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(output)) => print(&output),
        Err(Failure::Output(e)) => output_failed(&e),
        Err(Failure::Usage(message)) => {
            eprintln!("rpc: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Transport(e)) => {
            eprintln!("rpc: {}", chain(&e));
            ExitCode::from(3)
        }
        Err(Failure::Server(message)) => {
            eprintln!("rpc: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Status(e)) => {
            eprintln!("rpc: {e}");
            ExitCode::from(4)
        }
    }
}

/// Does the command: what to print, unless it printed as it went.
async fn run(options: Options) -> Result<Option<String>, Failure> {
    let streams = connect(&options).await?;
    // A stream may run as long as it likes unless `--timeout` says.
    let channel = match options.timeout {
        None => streams.with_timeout(DEFAULT_TIMEOUT),
        Some(_) => streams.clone(),
    };
    let output = match &options.command {
        Command::Describe { json } => {
            let list: String = channel.call("rpc.Reflection", "list", ()).await?;
            let list: serde_json::Value = serde_json::from_str(&list).map_err(|e| {
                Failure::Usage(format!("the server's service list does not parse: {e}"))
            })?;
            let mut out = Vec::new();
            for name in list["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
            {
                let text: String = channel.call("rpc.Reflection", "describe", (name,)).await?;
                if *json {
                    out.push(text);
                } else {
                    out.push(show::service(&parse_service(&text)?));
                }
            }
            Some(out.join("\n"))
        }
        Command::Call {
            service,
            method,
            args,
            pretty,
        } => {
            let text: String = channel
                .call("rpc.Reflection", "describe", (service.as_str(),))
                .await?;
            let described = parse_service(&text)?;
            let Some(found) = described.methods.iter().find(|m| &m.name == method) else {
                let known: Vec<_> = described.methods.iter().map(|m| m.name.as_str()).collect();
                return Err(Failure::Usage(format!(
                    "{service} has no method `{method}` (it has {})",
                    known.join(", ")
                )));
            };
            if let Some(reason) = &found.opaque {
                return Err(Failure::Usage(format!(
                    "{service}.{method} cannot be called from here: {reason}"
                )));
            }
            let registry = described.registry().map_err(Failure::Server)?;
            let mut values = values::arguments(found, args).map_err(Failure::Usage)?;
            let mut formats = Vec::new();
            // Only a unary method with a schema can leave fields out: the
            // call claims the schema it was written with.
            let schema = found.schema.as_deref().filter(|_| found.shape == "unary");
            let fields = values::Fields::default();
            for (arg, value) in found.args.iter().zip(&mut values) {
                let format = arg.format.clone().ok_or_else(|| {
                    Failure::Usage(format!("argument `{}` has no described format", arg.name))
                })?;
                match schema {
                    Some(_) => values::check_leaving_out(value, &format, &registry, &fields),
                    None => values::check(value, &format, &registry),
                }
                .map_err(|e| Failure::Usage(format!("argument `{}`: {e}", arg.name)))?;
                values::reshape(value, &format, &registry, values::Way::In);
                formats.push(format);
            }
            let returns =
                found.returns.format.clone().ok_or_else(|| {
                    Failure::Usage("the result has no described format".to_owned())
                })?;
            let reduced = match schema {
                Some(text) => fields.reduce(text, &registry).map_err(Failure::Usage)?,
                None => None,
            };
            let claim = match (&reduced, schema) {
                (Some(reduced), _) => Some(reduced.schema.as_str()),
                (None, text) => text,
            }
            .map(MethodSchema::parse)
            .transpose()
            .map_err(|e| Failure::Server(format!("the server's schema does not parse: {e}")))?;
            let encoded = values::Encoded::new(
                serde_json::Value::Array(values),
                &Format::Tuple(formats),
                reduced.as_ref().map_or(&registry, |r| &r.registry),
            );
            if found.shape != "unary" {
                let sent = match &found.stream_arg {
                    Some(arg) => Some((
                        arg.name.clone(),
                        arg.format.clone().ok_or_else(|| {
                            Failure::Usage(format!("`{}` has no described format", arg.name))
                        })?,
                    )),
                    None => None,
                };
                let call = streams::Call {
                    service,
                    method,
                    args: encoded,
                    registry: registry.clone(),
                    sent,
                    read: returns,
                    reads_stream: matches!(found.shape.as_str(), "server" | "bidi"),
                    error: found.returns_error.as_ref().and_then(|e| e.format.clone()),
                    pretty: *pretty,
                };
                let printed = streams::call(&streams, call).await;
                streams.close().await;
                return printed;
            }
            let reply = values::reply(returns.clone(), &registry);
            let mut value: serde_json::Value = channel
                .call_seeded(service, method, encoded, claim.as_ref(), reply)
                .await?;
            values::reshape(&mut value, &returns, &registry, values::Way::Out);
            if *pretty {
                Some(serde_json::to_string_pretty(&value).unwrap_or_default())
            } else {
                Some(value.to_string())
            }
        }
    };
    // Ends the connection cleanly (TLS close_notify) before the process goes.
    streams.close().await;
    Ok(output)
}

fn parse_service(text: &str) -> Result<Service, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("the server's description does not parse: {e}")))
}

/// The deadline of unary calls when `--timeout` says none.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn connect(options: &Options) -> Result<Channel, Failure> {
    let mut builder = Channel::builder();
    if let Some(timeout) = options.timeout {
        builder = builder.call_timeout(timeout);
    }
    if options.tls.is_on() {
        let host = options
            .addr
            .rsplit_once(':')
            .map_or(options.addr.as_str(), |(host, _)| host);
        let name = options
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        let mut tls = ClientTlsConfig::new(name);
        if let Some(ca) = &options.tls.ca {
            tls = tls.ca_certificates(
                certificates_from_pem_file(ca)
                    .map_err(|e| Failure::Usage(format!("--ca {ca}: {e}")))?,
            );
        }
        if let (Some(cert), Some(key)) = (&options.tls.cert, &options.tls.key) {
            tls = tls.identity(
                Identity::from_pem_files(cert, key)
                    .map_err(|e| Failure::Usage(format!("--cert/--key: {e}")))?,
            );
        }
        builder = builder.tls(tls);
    }
    let mut channel = builder.connect(options.addr.as_str()).await?;
    for (key, value) in &options.metadata {
        channel = channel.with_metadata(key, value);
    }
    Ok(channel)
}

/// Prints the command's output.
fn print(output: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{output}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output_failed(&e),
    }
}

/// A reader that went away (`| head`) is no failure; a full disk is.
fn output_failed(e: &std::io::Error) -> ExitCode {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("rpc: could not write the output: {e}");
    ExitCode::from(1)
}

/// An error with its causes.
fn chain(e: &RpcError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
