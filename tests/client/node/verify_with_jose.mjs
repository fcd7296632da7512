// Verifies tokens with jose (createLocalJWKSet + jwtVerify), as a Node.js API would.
// stdin:  {"jwks": {...}, "tokens": ["...", ...], "options": {...jwtVerify options}}
// stdout: [{"ok": true, "payload": {...}, "header": {...}} | {"ok": false, "code": "...", "message": "..."}, ...]
import { createLocalJWKSet, jwtVerify } from 'jose';

let text = '';
for await (const chunk of process.stdin) text += chunk;
const input = JSON.parse(text);
const keySet = createLocalJWKSet(input.jwks);
const results = [];
for (const token of input.tokens) {
  try {
    const { payload, protectedHeader } = await jwtVerify(token, keySet, input.options ?? {});
    results.push({ ok: true, payload, header: protectedHeader });
  } catch (error) {
    results.push({ ok: false, code: error.code ?? null, message: String(error.message) });
  }
}
process.stdout.write(JSON.stringify(results));
