// The official `openai` Node SDK's Realtime WebSocket client, unchanged, pointed at the edge.
// It derives wss:// from its base URL, so the edge must serve TLS (trusted via NODE_EXTRA_CA_CERTS).
// Env: SB_BASE_URL (https://host:port/v1), SB_API_KEY, SB_TURNS (JSON list of user messages).
// Prints one JSON object: every server event received, in order.
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const turns = JSON.parse(process.env.SB_TURNS);
const client = new OpenAI({ apiKey: process.env.SB_API_KEY, baseURL: process.env.SB_BASE_URL });
const rt = new OpenAIRealtimeWS({ model: 'switchboard' }, client);
const events = [];
const waiters = [];
rt.on('event', (event) => {
  events.push(event);
  for (const w of [...waiters]) if (w.type === event.type) { waiters.splice(waiters.indexOf(w), 1); w.resolve(event); }
});
rt.on('error', (err) => { console.error('realtime error', err); process.exit(2); });
const next = (type) => new Promise((resolve) => waiters.push({ type, resolve }));
setTimeout(() => { console.error('timed out; events so far:', JSON.stringify(events)); process.exit(3); }, 30000).unref();

await next('session.created');
for (const text of turns) {
  rt.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } });
  rt.send({ type: 'response.create' });
  await next('response.done');
}
rt.close();
console.log(JSON.stringify({ events }));
