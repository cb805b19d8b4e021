//! The agent's terminal and control socket while it runs: prompts, answers and what it
//! tells its user, around one [`Agent`] session at a time.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use deskwire::grants::{report_to_broker, LocalGrants};
use deskwire::lan::{LanAgent, LanAgentEvent};
use deskwire::{
    AcceptanceMode, Agent, AgentEvent, ConnectionCode, ConsentAnswer, DisconnectReason,
    GrantDecision,
};
use deskwire_agent::control::{Incoming, Request};

use deskwire_agent::panel::{Action, CodeKind, Panel, View};
use deskwire_signal::grant::CredentialMode;
use deskwire_signal::words;

/// How one agent's run ended.
pub(crate) enum Outcome {
    /// The session (or the attempt) ended.
    Ended(DisconnectReason),
    /// Ended from this side: `t` on the terminal or `terminate` on the control socket.
    Terminated,
    /// Code entry was cancelled with an empty line.
    Cancelled,
    /// Nobody is left to answer: the terminal closed (or, with none, no code came through
    /// the control socket in time) while the agent needed an answer or was only waiting.
    NobodyThere,
}

/// Where the user's answers come from.
pub(crate) struct Terminal {
    /// Lines typed; disconnected once standard input ended.
    lines: mpsc::Receiver<String>,
    /// Standard input is `/dev/null` (a service): nothing will ever be typed, its end means
    /// nothing, and questions are answered through the control socket only.
    none: bool,
    /// Standard input ended (said once).
    ended: bool,
}

impl Terminal {
    /// Standard input, read on a thread of its own so events keep flowing.
    pub(crate) fn stdin() -> Result<Self> {
        let (tx, lines) = mpsc::channel::<String>();
        let none = stdin_is_null();
        if none {
            // Nothing to read: keep the channel open so its end is never mistaken for a
            // user leaving.
            std::mem::forget(tx);
        } else {
            std::thread::Builder::new()
                .name("stdin".into())
                .spawn(move || {
                    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                })?;
        }
        Ok(Self {
            lines,
            none,
            ended: false,
        })
    }

    /// The next typed line, if one is there; `Err(())` once standard input has ended.
    fn try_line(&mut self) -> Result<Option<String>, ()> {
        match self.lines.try_recv() {
            Ok(line) => Ok(Some(line)),
            Err(mpsc::TryRecvError::Empty) => Ok(None),
            Err(mpsc::TryRecvError::Disconnected) => {
                self.ended = true;
                Err(())
            }
        }
    }
}

/// Whether standard input is `/dev/null`: how services start programs.
fn stdin_is_null() -> bool {
    std::fs::read_link("/proc/self/fd/0").is_ok_and(|p| p == std::path::Path::new("/dev/null"))
}

/// The terminal and the control socket.
pub(crate) struct Ui {
    pub(crate) terminal: Terminal,
    pub(crate) requests: mpsc::Receiver<Incoming>,
    /// A session got as far as connected.
    pub(crate) connected: bool,
    /// The broker, device key and grants file: each grant the user approves is reported,
    /// so the broker can let unattended calls through (`--standby`).
    pub(crate) grants_to: Option<(String, PathBuf, LocalGrants)>,
    /// How long a question asked without a terminal waits for the control socket.
    pub(crate) answer_within: Duration,
    /// The user's panel on the display, when asked for (`--panel`).
    pub(crate) panel: Option<Panel>,
}

/// Where the current agent stands, for `sessions` and the terminal.
#[derive(Debug, Default)]
enum State {
    #[default]
    Waiting,
    AskingCode,
    Consenting,
    /// The technician asks for unattended access during the session (`since`, `control`:
    /// the session's, to go back to once the question is answered).
    GrantAsked {
        id: u32,
        customer: bool,
        since: Option<Instant>,
        control: bool,
    },
    Connected {
        since: Option<Instant>,
        control: bool,
    },
}

impl State {
    /// The session a grant question was asked in, once the question is answered.
    fn after_grant(&self) -> State {
        match *self {
            State::GrantAsked { since, control, .. } => State::Connected { since, control },
            _ => State::Waiting,
        }
    }
}

impl Ui {
    /// Print what the LAN agent has to tell: a new password, and whether the brokers got it.
    pub(crate) fn show_lan(&mut self, agent: &mut LanAgent) {
        while let Some(event) = agent.poll_event() {
            match event {
                LanAgentEvent::Password { password, .. } => {
                    println!("LAN password: {password} (changes daily and at every restart)");
                    let _ = std::io::stdout().flush();
                }
                LanAgentEvent::PasswordReported => {
                    println!("the LAN password was reported to the broker")
                }
                LanAgentEvent::PasswordNotReported(why) => println!("{why}"),
                _ => {}
            }
        }
    }

    /// Tell the broker about grant `id`, so its unattended calls can come through it.
    fn report_grant(&self, id: u32) {
        let Some((broker, key, grants)) = &self.grants_to else {
            return;
        };
        let reported = (|| -> Result<()> {
            let entry = grants
                .get(id)?
                .with_context(|| format!("there is no grant {id} in the grants file"))?;
            report_to_broker(broker, key, &entry, Duration::from_secs(10))?;
            // A later revocation (`deskwire-agent grants --revoke`) is told here too.
            grants.reported_to(id, broker)?;
            Ok(())
        })();
        match reported {
            Ok(()) => println!("grant {id} reported to the broker"),
            Err(e) => println!("grant {id} not reported to the broker: {e:#}"),
        }
    }

    /// Whether standard input ended (a terminal or pipe that closed; never for
    /// `/dev/null`): the agent stops after the running session.
    pub(crate) fn terminal_ended(&self) -> bool {
        self.terminal.ended && !self.terminal.none
    }

    /// Show `view` on the panel, if there is one.
    fn show(&self, view: View) {
        if let Some(panel) = &self.panel {
            panel.show(view);
        }
    }

    /// Back to who is connected, after a question asked during the session.
    fn show_connected(&self, state: &State, technician: &Option<String>) {
        if let State::Connected { control, .. } = state {
            self.show(View::Connected {
                who: technician
                    .clone()
                    .unwrap_or_else(|| "The technician".to_owned()),
                control: *control,
                end: "Terminate",
            });
        }
    }

    /// A click on the panel as the words the terminal takes for it in `state` (`None`:
    /// nothing clicked, or a click done here: taking control back).
    fn panel_answer(
        &self,
        agent: &Agent,
        state: &mut State,
        technician: &Option<String>,
    ) -> Result<Option<String>> {
        let Some(action) = self.panel.as_ref().and_then(Panel::try_action) else {
            return Ok(None);
        };
        let words = match (action, &*state) {
            (Action::Code(code), State::AskingCode) if !code.is_empty() => code,
            (Action::Cancel, State::AskingCode) => String::new(),
            (Action::Accept, State::Consenting) => "y".into(),
            (Action::ViewOnly, State::Consenting) => "v".into(),
            (Action::Reject, State::Consenting) => "n".into(),
            (
                Action::AllowGrant,
                State::GrantAsked {
                    customer: false, ..
                },
            ) => "y".into(),
            (Action::RefuseGrant, State::GrantAsked { .. }) => "n".into(),
            (
                Action::AllowGrantAs { user, password },
                State::GrantAsked {
                    id, customer: true, ..
                },
            ) => {
                // Answered here: a password never goes through the terminal's words.
                let id = *id;
                *state = state.after_grant();
                self.show(View::Hidden);
                agent.answer_grant(id, GrantDecision::ApproveWithCredentials { user, password })?;
                return Ok(None);
            }
            (Action::Terminate, State::Connected { .. }) => "t".into(),
            (
                Action::StopControl,
                State::Connected {
                    since,
                    control: true,
                },
            ) => {
                agent.set_control(false)?;
                println!("control taken back: the technician can only see this screen now");
                *state = State::Connected {
                    since: *since,
                    control: false,
                };
                self.show_connected(state, technician);
                return Ok(None);
            }
            _ => return Ok(None),
        };
        Ok(Some(words))
    }

    /// Whether nobody can type at this agent: no terminal, or its input ended.
    pub(crate) fn nobody_at_terminal(&self) -> bool {
        self.terminal.none || self.terminal.ended
    }

    /// Ask for a code on the terminal until one parses; `None` on an empty line, or when
    /// nobody can type one.
    pub(crate) fn ask_code(&mut self) -> Result<Option<ConnectionCode>> {
        if self.terminal.none || self.terminal.ended {
            println!("no terminal to type another code on: stopping");
            return Ok(None);
        }
        prompt("to try again");
        loop {
            let Ok(line) = self.terminal.lines.recv() else {
                self.terminal.ended = true;
                println!("\nend of input: no code to try; stopping");
                return Ok(None);
            };
            let line = line.trim();
            if line.is_empty() {
                println!("cancelled");
                return Ok(None);
            }
            match line.parse() {
                Ok(code) => return Ok(Some(code)),
                Err(e) => prompt(&format!("{e}; try again")),
            }
        }
    }

    /// Between sessions (`doing` says what the agent waits for): answer the control socket
    /// and the terminal once. `Some` when the agent should stop: `terminate` on the control
    /// socket, `t` on the terminal, or the terminal's end (Ctrl-D, a closed pipe).
    pub(crate) fn idle(&mut self, doing: &str) -> Option<Outcome> {
        if let Ok(inc) = self.requests.try_recv() {
            let reply = match &inc.request {
                Request::Sessions => Ok(format!("no session ({doing})")),
                Request::Terminate => Ok("stopping".to_owned()),
                Request::Password => Err("not in LAN mode (start with --lan)".to_owned()),
                Request::Code(_) => Err("no code is being asked for".to_owned()),
            };
            let _ = inc.reply.send(reply);
            if inc.request == Request::Terminate {
                println!("stopped from the control socket");
                return Some(Outcome::Terminated);
            }
        }
        match self.terminal.try_line() {
            Ok(Some(line)) if matches!(line.trim(), "t" | "terminate" | "q" | "quit") => {
                println!("stopped");
                Some(Outcome::Terminated)
            }
            Ok(_) => None,
            Err(()) => {
                println!("end of input: stopping");
                Some(Outcome::NobodyThere)
            }
        }
    }

    /// Drive `agent` until its session ends, answering the terminal and the control socket
    /// (and telling what `lan` has to tell, in LAN mode).
    pub(crate) fn serve(
        &mut self,
        agent: Agent,
        mut lan: Option<&mut LanAgent>,
    ) -> Result<Outcome> {
        let mut state = State::Waiting;
        // When the current code question was asked: without a terminal, only the control
        // socket can answer it, and not forever.
        let mut code_asked_at: Option<Instant> = None;
        // The technician's name as the broker verified it, for the panel.
        let mut technician_name: Option<String> = None;
        loop {
            if let Some(agent) = lan.as_deref_mut() {
                self.show_lan(agent);
            }
            if let Ok(inc) = self.requests.try_recv() {
                let reply = match &inc.request {
                    Request::Password => match &lan {
                        Some(agent) => {
                            let p = agent.passwords();
                            Ok(format!(
                                "{} until {}",
                                p.current(),
                                words::when(deskwire::UnixMillis::now(), p.rotates_at())
                            ))
                        }
                        None => Err("not in LAN mode (start with --lan)".to_owned()),
                    },
                    Request::Sessions => Ok(describe(&state)),
                    Request::Terminate => Ok("terminated".to_owned()),
                    Request::Code(text) => match (&state, text.parse::<ConnectionCode>()) {
                        (State::AskingCode, Ok(code)) => {
                            state = State::Waiting;
                            agent
                                .try_code(code)
                                .map(|()| "code sent".to_owned())
                                .map_err(|e| e.to_string())
                        }
                        (State::AskingCode, Err(e)) => Err(e.to_string()),
                        _ => Err("no code is being asked for".to_owned()),
                    },
                };
                let _ = inc.reply.send(reply);
                if inc.request == Request::Terminate {
                    println!("session terminated on this computer");
                    agent.shutdown()?;
                    return Ok(Outcome::Terminated);
                }
            }
            let line = match self.terminal.try_line() {
                Ok(line) => line,
                Err(()) => {
                    // Whoever typed is gone. A question now has nobody to answer it; a
                    // session that runs goes on (and the agent stops after it).
                    let stop = match state {
                        State::AskingCode => Some("end of input: no code to try; stopping"),
                        State::Waiting if lan.is_some() => Some("end of input: stopping"),
                        _ => None,
                    };
                    if let Some(why) = stop {
                        println!("\n{why}");
                        agent.shutdown()?;
                        return Ok(Outcome::NobodyThere);
                    }
                    None
                }
            };
            if let (State::AskingCode, Some(since)) = (&state, code_asked_at) {
                if self.terminal.none && since.elapsed() >= self.answer_within {
                    println!(
                        "no code came through the control socket in {}: stopping",
                        words::duration(self.answer_within)
                    );
                    agent.shutdown()?;
                    return Ok(Outcome::NobodyThere);
                }
            }
            // A click on the panel answers as the same words typed would.
            let line = match line {
                Some(line) => Some(line),
                None => self.panel_answer(&agent, &mut state, &technician_name)?,
            };
            if let Some(line) = line {
                let line = line.trim().to_owned();
                if matches!(
                    state,
                    State::Consenting | State::GrantAsked { .. } | State::AskingCode
                ) {
                    // Answered (on either): the panel stops asking.
                    self.show(View::Hidden);
                }
                match state {
                    State::Consenting => {
                        state = State::Waiting;
                        let answer = match line.as_str() {
                            "y" | "yes" => ConsentAnswer::Allow { control: true },
                            "v" | "view" => ConsentAnswer::Allow { control: false },
                            _ => ConsentAnswer::Reject,
                        };
                        agent.answer_consent(answer)?;
                    }
                    State::GrantAsked { id, customer, .. } => {
                        state = state.after_grant();
                        let decision = match (line.as_str(), customer) {
                            ("y" | "yes", false) => GrantDecision::Approve,
                            (text, true) if text.contains(' ') => {
                                let (user, password) = text.split_once(' ').unwrap_or(("", ""));
                                GrantDecision::ApproveWithCredentials {
                                    user: user.to_owned(),
                                    password: password.to_owned(),
                                }
                            }
                            _ => GrantDecision::Reject,
                        };
                        agent.answer_grant(id, decision)?;
                    }
                    State::AskingCode if line.is_empty() => {
                        println!("cancelled");
                        agent.shutdown()?;
                        return Ok(Outcome::Cancelled);
                    }
                    State::AskingCode => match line.parse::<ConnectionCode>() {
                        Ok(code) => {
                            state = State::Waiting;
                            agent.try_code(code)?;
                        }
                        Err(e) => prompt(&format!("{e}; try again")),
                    },
                    _ if line == "t" || line == "terminate" => {
                        println!("session terminated on this computer");
                        agent.shutdown()?;
                        return Ok(Outcome::Terminated);
                    }
                    _ => {}
                }
            }
            let Ok(event) = agent.events().recv_timeout(Duration::from_millis(50)) else {
                continue;
            };
            match event {
                AgentEvent::CodeRefused { message, .. } => {
                    state = State::AskingCode;
                    self.show(View::AskingCode {
                        why: message.clone(),
                        kind: CodeKind::Connection,
                    });
                    code_asked_at = Some(Instant::now());
                    if self.terminal.none {
                        println!(
                            "{message}\ngive another code with `deskwire-agent ctl code CODE` within {}",
                            words::duration(self.answer_within)
                        );
                    } else if self.terminal.ended {
                        println!("{message}\nend of input: no code to try; stopping");
                        agent.shutdown()?;
                        return Ok(Outcome::NobodyThere);
                    } else {
                        prompt(&message);
                    }
                }
                AgentEvent::Joined => println!("a technician is connecting"),
                AgentEvent::LanRefused { from, message } => {
                    println!("refused a connection from {from}: {message}");
                }
                AgentEvent::ConsentRequested {
                    mode,
                    control,
                    timeout,
                    technician,
                } => {
                    state = State::Consenting;
                    let what = if control { "see and control" } else { "see" };
                    technician_name.clone_from(&technician);
                    let who = technician
                        .map_or("The technician".to_owned(), |t| format!("Technician {t}"));
                    self.show(View::Consent {
                        question: format!("{who} asks to {what} this screen."),
                        deadline: Instant::now() + timeout,
                        starts_on_its_own: matches!(
                            mode,
                            AcceptanceMode::AllowAutomatically { .. }
                        ),
                    });
                    let then = match mode {
                        AcceptanceMode::AllowAutomatically { .. } => "it starts on its own",
                        _ => "it is refused",
                    };
                    print!(
                        "{who} asks to {what} this screen. Allow? [y = yes, v = view only, n = no] \
                         (in {} s {then}): ",
                        timeout.as_secs()
                    );
                    let _ = std::io::stdout().flush();
                }
                AgentEvent::Connected { control, setup } => {
                    self.connected = true;
                    state = State::Connected {
                        since: Some(Instant::now()),
                        control,
                    };
                    self.show_connected(&state, &technician_name);
                    println!(
                        "connected in {}; the technician {} (t + Enter ends it)",
                        words::duration(setup),
                        if control {
                            "can see and control this screen"
                        } else {
                            "can see this screen"
                        }
                    );
                }
                AgentEvent::GrantRequested {
                    id,
                    request,
                    technician,
                } => {
                    let customer = request.credential_mode == CredentialMode::CustomerCredentials;
                    let (since, control) = match state {
                        State::Connected { since, control } => (since, control),
                        _ => (None, false),
                    };
                    state = State::GrantAsked {
                        id,
                        customer,
                        since,
                        control,
                    };
                    let who = technician.unwrap_or_else(|| "The technician".to_owned());
                    self.show(View::Grant {
                        question: if customer {
                            format!("{who} asks to connect when nobody is here ({}). To allow it, type your account name and password.", request.schedule)
                        } else {
                            format!("{who} asks to connect when nobody is here ({}); they will need this computer's admin credentials each time.", request.schedule)
                        },
                        credentials: customer,
                    });
                    let how = if customer {
                        "type your account name and password (name password) to allow, or n"
                    } else {
                        "they will need this computer's admin credentials each time; allow? [y/n]"
                    };
                    print!(
                        "{who} asks to connect when nobody is here ({}, {} time). {how}: ",
                        request.schedule,
                        match request.zone.of {
                            deskwire_signal::grant::ZoneOf::Customer => "your",
                            deskwire_signal::grant::ZoneOf::Technician => "their",
                        }
                    );
                    let _ = std::io::stdout().flush();
                }
                AgentEvent::GrantDecided { result, .. } => {
                    self.show_connected(&state, &technician_name);
                    match result {
                        Ok(local) => {
                            println!("unattended access granted (grant {local})");
                            self.report_grant(local);
                        }
                        Err(why) => println!("unattended access not granted: {why}"),
                    }
                }
                AgentEvent::LinkDown => println!(
                    "the technician's connection dropped; any keys they held were released. Waiting for it to come back."
                ),
                AgentEvent::LinkUp => println!("the technician's connection is back"),
                AgentEvent::Stats(s) => println!(
                    "sending {:.0} fps, {}; the viewer sees it {} after capture (median)",
                    s.fps,
                    words::rate(s.kbps * 1e3),
                    s.viewer_latency_p50
                        .map_or("(not measured yet)".to_owned(), words::duration)
                ),
                AgentEvent::Disconnected(reason) => {
                    self.show(View::Hidden);
                    match (&reason, self.connected) {
                        (DisconnectReason::Broker(why), false) => {
                            println!("cannot go on with the broker: {why}")
                        }
                        _ => println!("session ended: {reason}"),
                    }
                    let _ = std::io::stdout().flush();
                    agent.shutdown()?;
                    return Ok(Outcome::Ended(reason));
                }
                _ => {}
            }
        }
    }
}

fn describe(state: &State) -> String {
    match state {
        State::Waiting => "no session (waiting for a technician)".into(),
        State::AskingCode => "no session (waiting for a code)".into(),
        State::Consenting => "a technician is asking to connect".into(),
        State::GrantAsked { .. } => "1 session: the technician asks for unattended access".into(),
        State::Connected { since, control } => format!(
            "1 session: {} for {} s",
            if *control { "control" } else { "view only" },
            since.map_or(0, |s| s.elapsed().as_secs())
        ),
    }
}

fn prompt(why: &str) {
    print!("{why}\nenter the code again (empty line to cancel): ");
    let _ = std::io::stdout().flush();
}
