"""Pipeline specs the integration tests run and the history recorder records."""

from __future__ import annotations

DIAMOND = """
name: diamond
params:
  version: {type: string, required: true}
  notify: {type: boolean, default: false}
max_parallel: 3
steps:
  - id: start
    action: log
    params: {message: "release ${{ params.version }}"}
  - id: provision
    action: demo.provision
    needs: [start]
    params: {name: "svc-${{ params.version }}", step_seconds: 0.3}
  - id: warm-up
    action: delay
    needs: [start]
    params: {seconds: 0.6}
  - id: done
    action: log
    needs: [provision, warm-up]
    params: {message: "at ${{ steps.provision.outputs.endpoint }}"}
  - id: notify
    action: log
    needs: [start]
    if: "params.notify"
    params: {message: notify}
  - id: after-notify
    action: log
    needs: [notify]
    params: {message: never}
  - id: canary
    action: demo.flaky
    needs: [done]
    params: {failures: 3}
    retry: {max_attempts: 1}
    on_failure: continue
  - id: after-canary
    action: log
    needs: [canary]
    params: {message: never}
"""

COMPENSATED = """
name: rollback
on_failure: compensate
steps:
  - id: first
    action: demo.provision
    params: {name: first}
  - id: second
    action: demo.provision
    needs: [first]
    params: {name: second}
  - id: side
    action: log
    needs: [first]
    params: {message: side}
  - id: breaks
    action: demo.flaky
    needs: [second, side]
    params: {failures: 5}
    retry: {max_attempts: 1}
  - id: never
    action: log
    needs: [breaks]
    params: {message: never}
"""

CANCELLED = """
name: cancelled
max_parallel: 2
steps:
  - id: quick
    action: log
    params: {message: quick}
  - id: slow-a
    action: delay
    needs: [quick]
    params: {seconds: 60}
  - id: slow-b
    action: demo.provision
    needs: [quick]
    params: {name: slow-b, step_seconds: 20}
  - id: waits
    action: delay
    needs: [quick]
    params: {seconds: 1}
  - id: later
    action: log
    needs: [slow-a, slow-b]
    params: {message: never}
"""
