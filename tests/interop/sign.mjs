// Signs a body with a real provider library and prints the signature header value.
// Used by the Python ingest suite (tests/sdk/test_ingest.py) for the libraries that only
// exist for Node.
//
//   node tests/interop/sign.mjs stripe SECRET UNIX_SECONDS < body   -> Stripe-Signature value
//   node tests/interop/sign.mjs github SECRET < body                 -> X-Hub-Signature-256 value
import { readFileSync } from "node:fs";
import Stripe from "stripe";
import { sign } from "@octokit/webhooks-methods";

const [kind, secret, timestamp] = process.argv.slice(2);
const body = readFileSync(0, "utf8");

if (kind === "stripe") {
  const stripe = new Stripe("sk_test_unused");
  process.stdout.write(
    stripe.webhooks.generateTestHeaderString({ payload: body, secret, timestamp: Number(timestamp) }),
  );
} else if (kind === "github") {
  process.stdout.write(await sign(secret, body));
} else {
  console.error(`unknown kind ${kind}`);
  process.exit(2);
}
