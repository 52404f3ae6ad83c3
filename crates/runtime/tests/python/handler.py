"""A Python handler for the lambda runtime, run by awslambdaric.

The event's "mode" selects the behaviour, as for the Rust test handlers:
echo (default), error, sleep, env, trace (the X-Ray trace id awslambdaric
set from the `Lambda-Runtime-Trace-Id` header).
"""

import os
import time


def handler(event, context):
    if "log" in event:
        print(event["log"])
    mode = event.get("mode", "echo")
    if mode == "error":
        raise ValueError(event.get("message", "requested failure"))
    if mode == "sleep":
        time.sleep(event.get("ms", 1000) / 1000)
    if mode == "env":
        return {
            "pid": os.getpid(),
            "function_name": context.function_name,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "invoked_function_arn": context.invoked_function_arn,
            "remaining_ms_positive": context.get_remaining_time_in_millis() > 0,
        }
    if mode == "trace":
        return {"trace_id": os.environ.get("_X_AMZN_TRACE_ID")}
    return event
