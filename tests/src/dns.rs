//! A DNS server for the discovery tests, on 127.0.0.1 UDP port 0: it
//! answers A and SRV questions from records a test sets and changes, so
//! that the resolver the toolkit uses (hickory's) runs its real path, over
//! a real socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// One record the server gives.
#[derive(Debug, Clone)]
pub enum Record {
    /// `name` has the IPv4 address `ip`.
    A {
        /// The owner name, without the final dot.
        name: String,
        /// Its address.
        ip: Ipv4Addr,
    },
    /// `name` is served at `target`:`port`, with `weight`.
    Srv {
        /// The owner name, without the final dot.
        name: String,
        /// Relative weight.
        weight: u16,
        /// The port.
        port: u16,
        /// A name that has an A record here.
        target: String,
    },
}

/// A running test DNS server; stops with the runtime.
#[derive(Clone)]
pub struct DnsServer {
    /// Where it answers.
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Record>>>,
    /// The TTL of every answer, in seconds.
    ttl: u32,
}

impl DnsServer {
    /// Starts one whose answers have a TTL of `ttl` seconds.
    pub async fn start(ttl: u32) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let server = DnsServer {
            addr: socket.local_addr().expect("address"),
            records: Arc::default(),
            ttl,
        };
        let answering = server.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if let Some(reply) = answering.reply(&buf[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        server
    }

    /// Replaces every record.
    pub fn set(&self, records: Vec<Record>) {
        *self.records.lock().unwrap() = records;
    }

    /// The answer to the query `query`, or `None` for one it cannot read.
    fn reply(&self, query: &[u8]) -> Option<Vec<u8>> {
        let header = query.get(..12)?;
        // The question: labels up to the root, then type and class.
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        let question = &query[12..at + 4];
        let name = labels.join(".");
        let records = self.records.lock().unwrap();
        let mut answers = Vec::new();
        for record in records.iter() {
            match record {
                Record::A { name: owner, ip } if qtype == 1 && *owner == name => {
                    answers.push((1u16, ip.octets().to_vec()));
                }
                Record::Srv {
                    name: owner,
                    weight,
                    port,
                    target,
                } if qtype == 33 && *owner == name => {
                    let mut data = Vec::new();
                    data.extend_from_slice(&0u16.to_be_bytes());
                    data.extend_from_slice(&weight.to_be_bytes());
                    data.extend_from_slice(&port.to_be_bytes());
                    for label in target.split('.') {
                        data.push(label.len() as u8);
                        data.extend_from_slice(label.as_bytes());
                    }
                    data.push(0);
                    answers.push((33u16, data));
                }
                _ => {}
            }
        }
        let known = records.iter().any(|r| match r {
            Record::A { name: owner, .. } | Record::Srv { name: owner, .. } => *owner == name,
        });
        let mut reply = Vec::with_capacity(512);
        reply.extend_from_slice(&header[..2]);
        // A response, recursion desired and available; NXDOMAIN for a name
        // with no record of any type.
        let rcode = if known { 0 } else { 3 };
        reply.extend_from_slice(&[0x81 | (header[2] & 0x01), 0x80 | rcode]);
        reply.extend_from_slice(&1u16.to_be_bytes());
        reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        reply.extend_from_slice(&[0, 0, 0, 0]);
        reply.extend_from_slice(question);
        for (kind, data) in answers {
            // The owner is the question's name, at offset 12.
            reply.extend_from_slice(&[0xC0, 12]);
            reply.extend_from_slice(&kind.to_be_bytes());
            reply.extend_from_slice(&1u16.to_be_bytes());
            reply.extend_from_slice(&self.ttl.to_be_bytes());
            reply.extend_from_slice(&(data.len() as u16).to_be_bytes());
            reply.extend_from_slice(&data);
        }
        Some(reply)
    }
}
