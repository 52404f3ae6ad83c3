"""The handler runs unmodified under AWS's runtime interface client
(`python3 -m awslambdaric handler.handler`, as Mayfly's `lambda` runtime
starts it): a minimal Runtime API on loopback hands it one job item event and
receives the coding. Needs `awslambdaric` (scripts/test.sh installs it)."""
import json
import os
import subprocess
import sys
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EXAMPLE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVENT = {
    "job": "code-charts", "run": "r1", "item": "in/0001.txt", "attempt": 1,
    "payload": {"bucket": "charts", "key": "in/0001.txt",
                "body": "HPI: h/o MI. Denies chest pain.\nFamily History:\nMother had breast cancer.\n"},
}


class OneInvocationRuntimeApi(BaseHTTPRequestHandler):
    """Serves EVENT once on /next, records what comes back on /response or /error."""
    served = False
    outcome: dict = {}
    done = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next") and not type(self).served:
            type(self).served = True
            body = json.dumps(EVENT).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "0123abcd")
            self.send_header("Lambda-Runtime-Deadline-Ms", "4102444800000")
            self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:local:0:function:code-charts")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            # A second /next waits until the test ends the client.
            type(self).done.wait(30)
            self.send_response(503)
            self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        payload = self.rfile.read(length)
        kind = "response" if self.path.endswith("/response") else "error"
        type(self).outcome = {"kind": kind, "path": self.path, "body": json.loads(payload or b"null")}
        self.send_response(202)
        self.end_headers()
        type(self).done.set()


class AwsLambdaRicTest(unittest.TestCase):
    def test_handler_answers_a_job_item_through_the_runtime_api(self):
        server = ThreadingHTTPServer(("127.0.0.1", 0), OneInvocationRuntimeApi)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}",
                   _HANDLER="handler.handler", LAMBDA_TASK_ROOT=EXAMPLE, AWS_LAMBDA_FUNCTION_NAME="code-charts")
        client = subprocess.Popen([sys.executable, "-m", "awslambdaric", "handler.handler"], cwd=EXAMPLE, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            answered = OneInvocationRuntimeApi.done.wait(60)
        finally:
            client.kill()
            _, stderr = client.communicate(timeout=10)
            server.shutdown()
            server.server_close()
        self.assertTrue(answered, f"no answer from the handler within 60 s; its stderr: {stderr.decode(errors='replace')[-2000:]}")
        outcome = OneInvocationRuntimeApi.outcome
        self.assertEqual(outcome["kind"], "response", outcome)
        self.assertIn("/runtime/invocation/0123abcd/response", outcome["path"])
        coding = outcome["body"]
        self.assertEqual(coding["item"], "in/0001.txt")
        self.assertEqual([c["code"] for c in coding["codes"]], ["I25.2", "Z80.3"])
        self.assertEqual([(d["code"], d["reason"]) for d in coding["dropped"]], [("R07.9", "negated")])


if __name__ == "__main__":
    unittest.main()
