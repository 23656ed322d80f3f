//! The command line: `rpc describe ADDR` and `rpc call ADDR Service.method ARGS...`,
//! with the connection's options.

use std::time::Duration;

/// What to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Print what the server offers.
    Describe {
        /// As the server's JSON rather than as text.
        json: bool,
    },
    /// Call one method.
    Call {
        service: String,
        method: String,
        args: Vec<String>,
        pretty: bool,
    },
}

/// Everything the command line says.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) addr: String,
    pub(crate) command: Command,
    pub(crate) timeout: Option<Duration>,
    pub(crate) metadata: Vec<(String, String)>,
    pub(crate) tls: Tls,
}

/// TLS settings; TLS is on when any is given.
#[derive(Debug, Default)]
pub(crate) struct Tls {
    pub(crate) ca: Option<String>,
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) server_name: Option<String>,
}

impl Tls {
    pub(crate) fn is_on(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }
}

pub(crate) const USAGE: &str = "\
usage:
  rpc describe ADDR [--describe-json] [OPTIONS]
  rpc call ADDR Service.method [ARG ...] [--pretty] [OPTIONS]

ARGs are JSON values in the method's argument order (a word that is not
JSON is a string), or one JSON object by argument name. A method that
takes a stream reads its items from standard input, one JSON value per
line; a stream it returns is printed one JSON value per line. Bytes are
an array of numbers or base64; integers beyond 64 bits are strings of
digits; a map whose keys are not strings is an object keyed by each key's
JSON, or an array of [key, value] pairs.

options:
  --timeout D          deadline of each call: 500ms, 2s or seconds (default
                       10s, and none for a call that sends or reads a stream)
  -H, --metadata K=V   send metadata (repeatable)
  --ca FILE            CA certificates (PEM) to trust; turns TLS on
  --cert FILE --key FILE   client certificate and key (PEM), for mutual TLS
  --server-name NAME   name the server's certificate must have (default: ADDR's host)

exit codes: 0 done, 1 the output could not be written, 2 usage or a bad
argument, 3 a transport error or a server description that makes no sense,
4 an error status (the server's, or the call's deadline passing)";

/// Parses `args` (without the program's name).
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut timeout = None;
    let mut metadata = Vec::new();
    let mut tls = Tls::default();
    let (mut json, mut pretty) = (false, false);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("`{name}` needs a value"));
        match arg.as_str() {
            "--describe-json" => json = true,
            "--pretty" => pretty = true,
            "--timeout" => timeout = Some(duration(&value("--timeout")?)?),
            "-H" | "--metadata" => {
                let pair = value(&arg)?;
                let (key, val) = pair
                    .split_once('=')
                    .ok_or_else(|| format!("`{arg} {pair}`: write KEY=VALUE"))?;
                if key.is_empty() {
                    return Err(format!("`{arg} {pair}`: the key is empty"));
                }
                metadata.push((key.to_owned(), val.to_owned()));
            }
            "--ca" => tls.ca = Some(value("--ca")?),
            "--cert" => tls.cert = Some(value("--cert")?),
            "--key" => tls.key = Some(value("--key")?),
            "--server-name" => tls.server_name = Some(value("--server-name")?),
            "-h" | "--help" => return Err(String::new()),
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            _ => positional.push(arg),
        }
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err("`--cert` and `--key` go together".to_owned());
    }
    let mut positional = positional.into_iter();
    let command = positional.next().ok_or("say `describe` or `call`")?;
    let addr = positional.next().ok_or("the server's address is missing")?;
    let command = match command.as_str() {
        "describe" => Command::Describe { json },
        "call" => {
            let target = positional
                .next()
                .ok_or("say which method: Service.method")?;
            let (service, method) = target
                .rsplit_once('.')
                .ok_or_else(|| format!("`{target}`: write Service.method"))?;
            Command::Call {
                service: service.to_owned(),
                method: method.to_owned(),
                args: positional.by_ref().collect(),
                pretty,
            }
        }
        other => {
            return Err(format!(
                "unknown command `{other}`: say `describe` or `call`"
            ));
        }
    };
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected `{extra}`"));
    }
    Ok(Options {
        addr,
        command,
        timeout,
        metadata,
        tls,
    })
}

/// `500ms`, `2s`, or a number of seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`--timeout {text}`: write 500ms, 2s or a number of seconds");
    let (number, unit) = match text.strip_suffix("ms") {
        Some(number) => (number, 1e-3),
        None => (text.strip_suffix('s').unwrap_or(text), 1.0),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(value * unit).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Options, String> {
        parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn calls_and_options_parse() {
        let options =
            parsed("call 127.0.0.1:7878 Calculator.add 2 3 --timeout 500ms -H a=b").unwrap();
        assert_eq!(options.timeout, Some(Duration::from_millis(500)));
        assert_eq!(options.metadata, [("a".to_owned(), "b".to_owned())]);
        match options.command {
            Command::Call {
                service,
                method,
                args,
                ..
            } => {
                assert_eq!((service.as_str(), method.as_str()), ("Calculator", "add"));
                assert_eq!(args, ["2", "3"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            parsed("call x Calculator")
                .unwrap_err()
                .contains("Service.method")
        );
        assert!(
            parsed("frobnicate x")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(
            parsed("describe x --timeout soon")
                .unwrap_err()
                .contains("500ms")
        );
        assert!(
            parsed("describe x --cert c")
                .unwrap_err()
                .contains("go together")
        );
    }
}
