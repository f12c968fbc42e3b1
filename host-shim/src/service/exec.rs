//! Processes exec'd into a running task: Exec registers one, Start hands
//! it to the agent and connects its stdio, Delete forgets it.

use containerd_shim::api;
use containerd_shim::api::Status;
use containerd_shim::protos::events::task::{TaskExecAdded, TaskExecStarted};
use protobuf::MessageField;
use protocols::agent;

use super::HullShim;
use crate::errors::ShimError;
use crate::io::{ConnectedStreams, OutputsAhead, ProcessStdio, StdioPaths};
use crate::task::Proc;

/// containerd sends the process spec as the runtime-spec JSON in an Any.
fn parse_spec(req: &api::ExecProcessRequest) -> Result<oci_spec::runtime::Process, ShimError> {
    let any = req.spec.as_ref().ok_or(ShimError::Invalid {
        what: "exec spec",
        reason: "missing".into(),
    })?;
    let process: oci_spec::runtime::Process =
        serde_json::from_slice(&any.value).map_err(|e| ShimError::Invalid {
            what: "exec spec",
            reason: e.to_string(),
        })?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(ShimError::Invalid {
            what: "exec spec",
            reason: "args: empty; there is no program to run".into(),
        });
    }
    Ok(process)
}

impl HullShim {
    pub(super) async fn exec(&self, req: api::ExecProcessRequest) -> Result<(), ShimError> {
        let task = self.task(&req.id)?;
        if task.init.status() != Status::RUNNING {
            return Err(ShimError::FailedPrecondition(format!(
                "task {:?} is {:?}: exec needs a running task",
                req.id,
                task.init.status()
            )));
        }
        if !protocols::stream::valid_id(&req.exec_id) {
            return Err(ShimError::Invalid {
                what: "exec id",
                reason: format!("{:?} is not a valid identifier", req.exec_id),
            });
        }
        let mut process = parse_spec(&req)?;
        // containerd's own flag wins over the spec's, as in runc's shim.
        process.set_terminal(Some(req.terminal));
        let paths = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let proc = Proc::new(req.exec_id.clone(), paths, None);
        *proc.spec.lock().unwrap_or_else(|e| e.into_inner()) = Some(process);
        task.add_exec(proc)?;
        self.publish(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    /// Starts an exec'd process in the guest, connects its stdio and
    /// watches for its exit; TaskExecStarted precedes its TaskExit.
    pub(super) async fn start_exec(
        &self,
        req: api::StartRequest,
    ) -> Result<api::StartResponse, ShimError> {
        let task = self.task(&req.id)?;
        let proc = task.process(&req.exec_id)?;
        let _order = proc.lifecycle.lock().await;
        let process = proc
            .spec
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                ShimError::FailedPrecondition(format!(
                    "exec {:?} of task {:?} was already started",
                    req.exec_id, req.id
                ))
            })?;
        let sandbox = self.sandbox().await?;
        let began = std::time::Instant::now();
        let exec = agent::ExecProcessRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            process: MessageField::some(protocols::process::to_proto(&process).map_err(|e| {
                ShimError::Invalid {
                    what: "exec spec",
                    reason: e.to_string(),
                }
            })?),
            hull_oci_process_json: serde_json::to_string(&process).map_err(|e| {
                ShimError::Invalid {
                    what: "exec spec",
                    reason: e.to_string(),
                }
            })?,
            ..Default::default()
        };
        // Its outputs are announced before the process exists, so it
        // writes into them itself; stdin connects while the agent starts
        // it and names it once it exists.
        let ahead = OutputsAhead::announce(
            sandbox.vsock.as_ref(),
            &req.id,
            &req.exec_id,
            proc.stdio_paths.terminal,
        )
        .await?;
        let (started, streams) = tokio::join!(
            sandbox.agent.agent.exec_process(sandbox.agent.ctx(), &exec),
            ConnectedStreams::connect(sandbox.vsock.as_ref(), ahead)
        );
        started.map_err(ShimError::agent("ExecProcess"))?;
        let exec_done = std::time::Instant::now();
        let stdio = match streams {
            Ok(streams) => {
                ProcessStdio::attach_connected(
                    streams,
                    &req.id,
                    &req.exec_id,
                    &proc.stdio_paths,
                    &self.0.log,
                )
                .await
            }
            Err(e) => Err(e),
        };
        let stdio = match stdio {
            Ok(s) => s,
            Err(e) => {
                self.kill_exec_after_failed_start(&req.id, &req.exec_id, &sandbox)
                    .await;
                return Err(e);
            }
        };
        *proc.stdio.lock().await = Some(stdio);
        // The exec timeline `make bench` prints comes from this line.
        slog::info!(self.0.log, "exec started"; "container" => &req.id, "exec" => &req.exec_id,
            "agent_exec_us" => exec_done.duration_since(began).as_micros(),
            "stdio_us" => exec_done.elapsed().as_micros());
        proc.mark_running();
        tokio::spawn(self.clone().watch_exit(task.clone(), proc.clone(), sandbox));
        self.publish(TaskExecStarted {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            pid: task.pid,
            ..Default::default()
        });
        Ok(api::StartResponse {
            pid: task.pid,
            ..Default::default()
        })
    }

    /// A process whose stdio could not be connected must not run on
    /// unseen: it is killed, and its exit collected so the agent forgets it.
    async fn kill_exec_after_failed_start(
        &self,
        container_id: &str,
        exec_id: &str,
        sandbox: &crate::sandbox::Sandbox,
    ) {
        let kill = agent::SignalProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            signal: libc::SIGKILL as u32,
            ..Default::default()
        };
        let a = &sandbox.agent;
        if a.agent.signal_process(a.ctx(), &kill).await.is_ok() {
            let wait = agent::WaitProcessRequest {
                container_id: container_id.into(),
                exec_id: exec_id.into(),
                ..Default::default()
            };
            let _ = a.agent.wait_process(a.ctx(), &wait).await;
        }
    }

    pub(super) async fn delete_exec(
        &self,
        req: api::DeleteRequest,
    ) -> Result<api::DeleteResponse, ShimError> {
        let task = self.task(&req.id)?;
        let proc = task.process(&req.exec_id)?;
        if proc.status() == Status::RUNNING {
            return Err(ShimError::FailedPrecondition(format!(
                "exec {:?} of task {:?} is running; kill it first",
                req.exec_id, req.id
            )));
        }
        if let Some(stdio) = proc.stdio.lock().await.take() {
            stdio.release();
        }
        task.remove_exec(&req.exec_id);
        // Never started: report it as runc does, killed before it ran.
        let exit = proc.exit().unwrap_or_else(|| proc.set_exit(137));
        Ok(api::DeleteResponse {
            pid: task.pid,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }
}

/// For the unit tests of spec parsing.
#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> api::ExecProcessRequest {
        api::ExecProcessRequest {
            id: "c".into(),
            exec_id: "e".into(),
            spec: MessageField::some(protobuf::well_known_types::any::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: json.as_bytes().to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_containerd_exec_spec_parses() {
        let p = parse_spec(&req(
            r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"env":["A=1"]}"#,
        ))
        .unwrap();
        assert_eq!(p.args().as_deref(), Some(&["sh".to_string()][..]));
    }

    #[test]
    fn bad_exec_specs_are_invalid_and_named() {
        for (json, needle) in [
            ("{not json", "exec spec"),
            (r#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#, "args"),
        ] {
            let err = parse_spec(&req(json)).unwrap_err();
            assert!(matches!(err, ShimError::Invalid { .. }), "{err}");
            assert!(err.to_string().contains(needle), "{err}");
        }
        let mut none = req("{}");
        none.spec = MessageField::none();
        assert!(parse_spec(&none)
            .unwrap_err()
            .to_string()
            .contains("missing"));
    }
}
