//! Reaching officers away from the console (docs/integrations.md).
//!
//! - [`Plan`]: from the configuration file, which outbox rows a change enqueues (the chosen
//!   escalation ladder's steps, each a row due at its time). The store calls it inside the
//!   transaction of the change, so an acknowledged alarm always has its notifications queued.
//! - [`worker`]: takes due rows and delivers them, apart from the alarm path (ingest never waits
//!   for a channel), with retries, exponential backoff and jitter; every attempt is recorded.
//! - [`channels`]: what each channel sends; [`email`]: SMTP; [`http`]: the HTTP clients.
//! - [`siem`]: the SIEM feed (audit entries and incident changes to syslog or a JSON-lines
//!   file), each sink at its own durable position in the store.

pub mod channels;
pub mod dc09;
pub mod email;
pub mod http;
pub mod schedule;
pub mod siem;
pub mod supervision;
pub mod watch;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ChannelConfig, ReceiverConfig, RuleKind};
use crate::store::{NotificationFacts, NotifyPlanner, PlannedNotification};

/// The ladders and rules of a configuration, as the store's planner.
#[derive(Debug)]
pub struct Plan {
    config: Arc<ReceiverConfig>,
    schedules: schedule::Schedules,
}

impl Plan {
    pub fn new(config: Arc<ReceiverConfig>) -> Self {
        // Checked when the file was loaded; a file built in code that fails here has no
        // schedules, and every station counts as always protected (the safe side).
        let schedules = schedule::Schedules::from_config(&config.schedules).unwrap_or_default();
        Plan { config, schedules }
    }

    /// The ladder for these facts: the first rule whose every given key matches; otherwise,
    /// for a real incident, the ladder named `default`. A self-test only by a rule that says
    /// `kind = "test"`.
    pub fn ladder_for(&self, facts: &NotificationFacts) -> Option<&str> {
        let is_test = facts.reason == "test";
        let loc = &facts.location;
        for rule in &self.config.rules {
            let kind_ok = match rule.kind {
                Some(RuleKind::Test) => is_test,
                Some(RuleKind::Duress) | None => !is_test,
            };
            let building_ok = rule
                .building
                .as_deref()
                .is_none_or(|b| loc.bld.as_deref() == Some(b));
            let site_ok = rule
                .site
                .as_deref()
                .is_none_or(|s| loc.nam.as_deref() == Some(s));
            if kind_ok && building_ok && site_ok {
                return Some(&rule.ladder);
            }
        }
        if is_test {
            return None;
        }
        self.config.ladder("default").map(|l| l.name.as_str())
    }
}

impl NotifyPlanner for Plan {
    fn supervised(&self, facts: &NotificationFacts) -> bool {
        let Some(sup) = &self.config.supervision else {
            return true;
        };
        self.schedules
            .active(schedule::schedule_for(sup, facts), facts.at)
    }

    fn plan(&self, facts: &NotificationFacts) -> Vec<PlannedNotification> {
        if facts.reason == "offline" {
            let Some(sup) = &self.config.supervision else {
                return Vec::new();
            };
            return sup
                .channels
                .iter()
                .map(|ch| PlannedNotification {
                    channel: ch.clone(),
                    ladder: None,
                    step: 0,
                    repeat_index: 0,
                    delay: Duration::ZERO,
                    stop_on_claim: false,
                })
                .collect();
        }
        if facts.reason == "resolved" {
            // The restore (Contact ID qualifier 3) on every DC-09 channel of the incident's
            // ladder, and the CAP `Cancel` on every CAP channel: systems that track the alarm
            // as an open state must hear that it ended. Other channels (people) say nothing on
            // resolve. The store keeps only channels that carried the alarm, once each.
            let Some(ladder) = self.ladder_for(facts).and_then(|n| self.config.ladder(n)) else {
                return Vec::new();
            };
            return ladder
                .steps
                .iter()
                .flat_map(|s| s.channels.iter())
                .filter(|ch| {
                    matches!(
                        self.config.channel(ch),
                        Some(ChannelConfig::Dc09(_) | ChannelConfig::Cap(_))
                    )
                })
                .map(|ch| PlannedNotification {
                    channel: ch.clone(),
                    ladder: Some(ladder.name.clone()),
                    step: 0,
                    repeat_index: 0,
                    delay: Duration::ZERO,
                    stop_on_claim: false,
                })
                .collect();
        }
        if !matches!(facts.reason.as_str(), "incident" | "test") {
            return Vec::new();
        }
        let Some(ladder) = self.ladder_for(facts).and_then(|n| self.config.ladder(n)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (si, step) in ladder.steps.iter().enumerate() {
            for r in 0..=step.repeat {
                let delay_s = step
                    .after_s
                    .saturating_add(u64::from(r).saturating_mul(step.repeat_interval_s()));
                for ch in &step.channels {
                    // A camera system is asked only where a template covers the location.
                    if let Some(ChannelConfig::Vms(v)) = self.config.channel(ch)
                        && channels::vms_request(v, facts).is_none()
                    {
                        continue;
                    }
                    out.push(PlannedNotification {
                        channel: ch.clone(),
                        ladder: Some(ladder.name.clone()),
                        step: u32::try_from(si).unwrap_or(u32::MAX),
                        repeat_index: r,
                        delay: Duration::from_secs(delay_s),
                        // Anything not sent at once waits to see whether someone took it.
                        stop_on_claim: delay_s > 0,
                    });
                }
            }
        }
        out
    }
}

/// The running notifier: configuration and one HTTP client per channel.
#[derive(Debug)]
pub struct Notifier {
    pub config: Arc<ReceiverConfig>,
    clients: HashMap<String, reqwest::Client>,
    /// The first retry's delay (doubling, capped at `retry_cap`).
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Attempts before a notification is given up (`failed`, shown and logged as an error).
    pub max_attempts: u32,
    /// The DC-09 central stations' link state (sequence numbers, clock offsets).
    pub dc09: Arc<dc09::Links>,
}

impl Notifier {
    /// Builds every channel's client (a `ca_cert` that cannot be read is an error naming the
    /// channel).
    pub fn new(config: Arc<ReceiverConfig>) -> Result<Self, String> {
        let mut clients = HashMap::new();
        for c in &config.channels {
            let ca = match c {
                ChannelConfig::Teams(t) => t.ca_cert.as_deref(),
                ChannelConfig::Webhook(w) => w.ca_cert.as_deref(),
                ChannelConfig::Sms(s) => s.ca_cert.as_deref(),
                ChannelConfig::Vms(v) => v.ca_cert.as_deref(),
                ChannelConfig::Cap(c) => c.ca_cert.as_deref(),
                ChannelConfig::Email(_) | ChannelConfig::Dc09(_) => continue,
            };
            let client = http::client(ca).map_err(|e| format!("channel {:?}: {e}", c.name()))?;
            clients.insert(c.name().to_owned(), client);
        }
        Ok(Notifier {
            config,
            clients,
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(300),
            max_attempts: 25,
            dc09: Arc::new(dc09::Links::default()),
        })
    }

    pub fn planner(&self) -> Arc<dyn NotifyPlanner> {
        Arc::new(Plan::new(self.config.clone()))
    }

    pub(crate) fn client(&self, channel: &str) -> Option<&reqwest::Client> {
        self.clients.get(channel)
    }
}
