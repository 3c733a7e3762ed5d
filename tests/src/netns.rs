//! Two network namespaces joined by a veth pair, made by the test itself (root, `ip netns`),
//! removed on drop even when the test fails. Addresses `10.231.X.1` (agent side) and
//! `10.231.X.2` (receiver side) exist only inside those namespaces; nothing in the host
//! namespace is touched (no route, no rule, no qdisc). Packet loss is an nftables table inside
//! the test's own namespaces.
//!
//! When namespaces cannot be made (not root, no `ip`), [`TestNet::create`] fails the test with a
//! message saying so: CI runs as root on a machine that can make them.

use std::process::Command;

/// The pair of namespaces and their link.
#[derive(Debug)]
pub struct TestNet {
    pub agent_ns: String,
    pub receiver_ns: String,
    pub agent_if: String,
    pub receiver_if: String,
    pub agent_addr: String,
    pub receiver_addr: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TestNet {
    /// Creates both namespaces, the veth pair between them, addresses and links up.
    pub fn create() -> TestNet {
        let pid = std::process::id();
        let tag = pid % 100_000;
        let x = pid % 250 + 1;
        let net = TestNet {
            agent_ns: format!("duress-{tag}-a"),
            receiver_ns: format!("duress-{tag}-b"),
            agent_if: format!("dva{tag}"),
            receiver_if: format!("dvb{tag}"),
            agent_addr: format!("10.231.{x}.1"),
            receiver_addr: format!("10.231.{x}.2"),
        };
        // Leftovers of a killed earlier run with the same pid: remove quietly.
        net.remove();
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), net.agent_ns.clone()],
            vec!["netns".into(), "add".into(), net.receiver_ns.clone()],
            vec![
                "-n".into(),
                net.agent_ns.clone(),
                "link".into(),
                "add".into(),
                net.agent_if.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                net.receiver_if.clone(),
                "netns".into(),
                net.receiver_ns.clone(),
            ],
            vec![
                "-n".into(),
                net.agent_ns.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", net.agent_addr),
                "dev".into(),
                net.agent_if.clone(),
            ],
            vec![
                "-n".into(),
                net.receiver_ns.clone(),
                "addr".into(),
                "add".into(),
                format!("{}/24", net.receiver_addr),
                "dev".into(),
                net.receiver_if.clone(),
            ],
            vec![
                "-n".into(),
                net.agent_ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                net.receiver_ns.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                net.agent_ns.clone(),
                "link".into(),
                "set".into(),
                net.agent_if.clone(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                net.receiver_ns.clone(),
                "link".into(),
                "set".into(),
                net.receiver_if.clone(),
                "up".into(),
            ],
        ];
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = ip(&args) {
                net.remove();
                panic!(
                    "\n\nTHIS TEST NEEDS NETWORK NAMESPACES (root and `ip netns`), AND THEY CANNOT BE \
                     MADE HERE:\n{e}\nRun the suite as root (CI does) on a machine that allows \
                     `ip netns add`.\n"
                );
            }
        }
        net
    }

    /// `ip netns exec NS program`: a command that runs inside namespace `ns`.
    pub fn command(&self, ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Takes the link down (`up = false`) or up again, from the agent's side.
    pub fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.agent_ns, "link", "set", &self.agent_if, state]).expect("link set");
        ip(&[
            "-n",
            &self.receiver_ns,
            "link",
            "set",
            &self.receiver_if,
            state,
        ])
        .expect("link set");
    }

    /// Drops one packet in `modulo` at random on the veth, both ways (an nftables table in
    /// each of the test's namespaces), or removes that table.
    pub fn set_loss(&self, modulo: Option<u32>) {
        for (ns, dev) in [
            (&self.agent_ns, &self.agent_if),
            (&self.receiver_ns, &self.receiver_if),
        ] {
            let _ = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "nft",
                    "delete",
                    "table",
                    "inet",
                    "duress_loss",
                ])
                .output();
            if let Some(m) = modulo {
                let rules = format!(
                    "table inet duress_loss {{\n chain out {{\n  type filter hook output priority 0;\n  \
                     oifname \"{dev}\" numgen random mod {m} 0 counter drop\n }}\n}}\n"
                );
                let path = std::env::temp_dir().join(format!("{ns}-loss.nft"));
                std::fs::write(&path, rules).expect("write nft rules");
                let out = Command::new("ip")
                    .args(["netns", "exec", ns, "nft", "-f"])
                    .arg(&path)
                    .output()
                    .expect("run nft (install the nftables package: scripts/install-deps)");
                let _ = std::fs::remove_file(&path);
                assert!(
                    out.status.success(),
                    "nft in {ns} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Packets the loss rules dropped so far (both namespaces).
    pub fn dropped_packets(&self) -> u64 {
        [&self.agent_ns, &self.receiver_ns]
            .iter()
            .map(|ns| {
                let out = Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        ns,
                        "nft",
                        "list",
                        "table",
                        "inet",
                        "duress_loss",
                    ])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                out.split("counter packets ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    fn remove(&self) {
        for ns in [&self.agent_ns, &self.receiver_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, which deletes the pair.
        self.remove();
    }
}
