//! `sip-firewall top`: a live view of the running daemon over its admin socket: XDP verdict
//! rates, the bans of the last minute (the sources dropped, with why), SIP activity, and
//! where the policy is enforced. One `top` request a refresh; rates come from two answers.
//! `q` (or Esc, Ctrl-C) quits.

use std::{
    collections::HashMap,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table},
};

use super::{
    client,
    protocol::{Request, Response, TopView},
};

/// Two consecutive answers and the time between them.
#[derive(Default)]
pub struct Model {
    pub now: Option<TopView>,
    pub before: Option<(TopView, Duration)>,
    /// Why the last refresh failed (the daemon went away), shown in the header.
    pub error: Option<String>,
}

impl Model {
    /// Per-second rate of a counter that `get` reads from an answer.
    fn rate(&self, get: impl Fn(&TopView) -> f64) -> Option<f64> {
        let now = self.now.as_ref()?;
        let (before, dt) = self.before.as_ref()?;
        let secs = dt.as_secs_f64();
        (secs > 0.0).then(|| ((get(now) - get(before)).max(0.0)) / secs)
    }
}

/// The sum of every sample of metric `name` whose series starts with `name` and, when given,
/// carries the label `label`.
fn sum(v: &TopView, name: &str, label: Option<&str>) -> f64 {
    v.samples
        .iter()
        .filter(|(s, _)| {
            (s == name || s.starts_with(&format!("{name}{{")))
                && label.is_none_or(|l| s.contains(l))
        })
        .map(|(_, x)| x)
        .sum()
}

fn xdp(v: &TopView) -> HashMap<&str, (u64, u64)> {
    v.stats
        .xdp
        .iter()
        .map(|(r, p, b)| (r.as_str(), (*p, *b)))
        .collect()
}

fn per_sec(x: Option<f64>) -> String {
    match x {
        None => "-".to_string(),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Draw one frame.
pub fn draw(frame: &mut Frame, m: &Model) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let Some(v) = &m.now else {
        let text = m
            .error
            .clone()
            .unwrap_or_else(|| "waiting for the daemon".into());
        frame.render_widget(Paragraph::new(text), frame.area());
        return;
    };
    let header = header(m, v, bold);
    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(header.len() as u16 + 1),
        Constraint::Length(v.stats.xdp.len().max(1) as u16 + 3),
        Constraint::Min(6),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header), top);
    frame.render_widget(verdicts(m, v, bold), middle);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    frame.render_widget(recent_bans(v, bold), left);
    frame.render_widget(sip_activity(m, v), right);
}

/// The first lines: version, uptime, where the policy is enforced, bans and lists.
fn header(m: &Model, v: &TopView, bold: Style) -> Vec<Line<'static>> {
    let s = &v.status;
    let place = if s.xdp.is_empty() {
        format!("{} (no XDP)", s.enforcement)
    } else {
        let on: Vec<String> = s.xdp.iter().map(|(i, m)| format!("{i} {m}")).collect();
        format!("{} on {}", s.enforcement, on.join(", "))
    };
    let mut header = vec![
        Line::styled(
            format!(
                "sip-firewall {}  pid {}  up {}  enforcement: {place}",
                s.version,
                s.pid,
                ago(s.uptime_secs)
            ),
            bold,
        ),
        Line::raw(format!(
            "bans active {}  made since start {}  allow {}  deny {}   (refresh 1s, q quits)",
            s.bans_active,
            v.stats.bans_made.iter().map(|(_, n)| n).sum::<u64>(),
            s.allow_entries,
            s.deny_entries
        )),
    ];
    if let Some(e) = &m.error {
        header.push(Line::raw(format!("last refresh failed: {e}")));
    }
    header
}

/// XDP verdicts: packets/s, bytes/s, totals.
fn verdicts(m: &Model, v: &TopView, bold: Style) -> Table<'static> {
    let before = m.before.as_ref().map(|(b, dt)| (xdp(b), dt.as_secs_f64()));
    let rows: Vec<Row> = if v.stats.xdp.is_empty() {
        vec![Row::new(vec![
            "not attached: user space enforces".to_string(),
        ])]
    } else {
        v.stats
            .xdp
            .iter()
            .map(|(reason, p, b)| {
                let (pps, bps) = match &before {
                    Some((prev, secs)) if *secs > 0.0 => {
                        let (pp, pb) = prev.get(reason.as_str()).copied().unwrap_or((0, 0));
                        (
                            Some(p.saturating_sub(pp) as f64 / secs),
                            Some(b.saturating_sub(pb) as f64 / secs),
                        )
                    }
                    _ => (None, None),
                };
                Row::new(vec![
                    reason.clone(),
                    per_sec(pps),
                    per_sec(bps),
                    p.to_string(),
                ])
            })
            .collect()
    };
    Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(12),
            Constraint::Length(14),
            Constraint::Length(16),
        ],
    )
    .header(Row::new(vec!["verdict", "packets/s", "bytes/s", "packets"]).style(bold))
    .block(Block::bordered().title(" XDP verdicts "))
}

/// The sources dropped: the daemon counts drops per verdict, not per source; the sources it
/// drops are the ones it banned, so the bans of the last minute with their reason.
fn recent_bans(v: &TopView, bold: Style) -> Table<'static> {
    let now = crate::clock::unix_now();
    let bans: Vec<Row> = v
        .recent_bans
        .iter()
        .map(|b| {
            Row::new(vec![
                b.ban.ip.to_string(),
                b.ban.reason.clone(),
                format!("{} ago", ago(now.saturating_sub(b.ban.created_unix))),
            ])
        })
        .collect();
    Table::new(
        bans,
        [
            Constraint::Length(26),
            Constraint::Min(12),
            Constraint::Length(10),
        ],
    )
    .header(Row::new(vec!["dropped source", "reason", "banned"]).style(bold))
    .block(Block::bordered().title(format!(
        " bans in the last minute: {} ",
        v.recent_bans_total
    )))
}

/// SIP activity: calls, rates, transactions, registrations, connections, drops.
fn sip_activity(m: &Model, v: &TopView) -> Table<'static> {
    let sip = [
        ("calls in progress", v.status.calls_active.to_string()),
        (
            "INVITE/s (new calls)",
            per_sec(m.rate(|v| sum(v, "sipfw_sip_requests_total", Some("\"INVITE\"")))),
        ),
        (
            "requests/s",
            per_sec(m.rate(|v| sum(v, "sipfw_sip_requests_total", None))),
        ),
        (
            "transactions",
            format!("{}", sum(v, "sipfw_proxy_transactions_active", None)),
        ),
        (
            "registrations",
            format!("{}", sum(v, "sipfw_registrar_bindings", None)),
        ),
        (
            "TCP connections",
            format!("{}", sum(v, "sipfw_sip_tcp_connections", None)),
        ),
        (
            "user-space drops/s",
            per_sec(m.rate(|v| {
                sum(v, "sipfw_userspace_drops_total", None)
                    + sum(v, "sipfw_sip_dropped_total", None)
            })),
        ),
    ];
    Table::new(
        sip.iter()
            .map(|(k, x)| Row::new(vec![k.to_string(), x.clone()])),
        [Constraint::Length(22), Constraint::Min(8)],
    )
    .block(Block::bordered().title(" SIP "))
}

fn fetch(socket: &Path) -> Result<TopView, String> {
    match client::call(socket, &Request::Top) {
        Ok(Response { ok: true, data, .. }) => {
            serde_json::from_value(data).map_err(|e| e.to_string())
        }
        Ok(Response { error, .. }) => Err(error.unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

/// Run the view until `q`.
pub fn run(socket: &Path, interval: Duration) -> ExitCode {
    // The first answer before taking over the terminal: no daemon, one line and exit 1.
    let first = match fetch(socket) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("sip-firewall: {e}");
            return ExitCode::from(1);
        }
    };
    let mut model = Model {
        now: Some(first),
        ..Model::default()
    };
    let mut last = Instant::now();
    let mut terminal = ratatui::init();
    let result = (|| -> std::io::Result<()> {
        loop {
            terminal.draw(|f| draw(f, &model))?;
            let deadline = last + interval;
            while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
                if event::poll(wait)?
                    && let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
            }
            let elapsed = last.elapsed();
            last = Instant::now();
            match fetch(socket) {
                Ok(v) => {
                    model.before = model.now.take().map(|b| (b, elapsed));
                    model.now = Some(v);
                    model.error = None;
                }
                Err(e) => model.error = Some(e),
            }
        }
    })();
    ratatui::restore();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-firewall: top: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::protocol::{Stats, Status};

    fn view(passed: u64, banned: u64, invites: f64) -> TopView {
        TopView {
            status: Status {
                version: "0.1.0".into(),
                pid: 7,
                uptime_secs: 65,
                xdp: vec![("eth0".into(), "native".into())],
                enforcement: "xdp".into(),
                sip_listen: vec!["0.0.0.0:5060".into()],
                bans_active: 1,
                allow_entries: 0,
                deny_entries: 0,
                calls_active: 2,
                fraud_suspended: 0,
                relayed_registrations: 0,
                calls_by_peer: vec![],
                calls_by_account: vec![],
                cluster: None,
                connections: vec![],
            },
            stats: Stats {
                xdp: vec![
                    ("passed".into(), passed, passed * 100),
                    ("banned".into(), banned, banned * 100),
                ],
                bans_active: 1,
                bans_made: vec![("flood".into(), 1)],
            },
            recent_bans: vec![],
            recent_bans_total: 0,
            samples: vec![
                (
                    "sipfw_sip_requests_total{method=\"INVITE\"}".into(),
                    invites,
                ),
                ("sipfw_registrar_bindings".into(), 3.0),
            ],
        }
    }

    #[test]
    fn rates_from_two_answers() {
        let m = Model {
            now: Some(view(300, 2000, 40.0)),
            before: Some((view(100, 0, 20.0), Duration::from_secs(2))),
            error: None,
        };
        let backend = ratatui::backend::TestBackend::new(110, 30);
        let mut t = ratatui::Terminal::new(backend).unwrap();
        t.draw(|f| draw(f, &m)).unwrap();
        let screen: String = t
            .backend()
            .buffer()
            .content()
            .chunks(110)
            .map(|l| l.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        assert!(
            screen.contains("enforcement: xdp on eth0 native"),
            "{screen}"
        );
        // passed: 200 packets in 2 s; banned: 2000 in 2 s; INVITE 20 in 2 s.
        let line = |w: &str| {
            screen
                .lines()
                .find(|l| l.contains(w))
                .unwrap_or("")
                .to_string()
        };
        assert!(line("passed").contains("100"), "{screen}");
        assert!(line("banned").contains("1000"), "{screen}");
        assert!(line("INVITE/s").contains("10.0"), "{screen}");
        assert!(line("registrations").contains('3'), "{screen}");
        assert!(line("calls in progress").contains('2'), "{screen}");
    }
}
