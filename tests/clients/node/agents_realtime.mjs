// The official `@openai/agents-realtime` RealtimeSession, unchanged, pointed at the edge.
// Env: SB_URL (wss://host:port/v1/realtime?model=switchboard), SB_API_KEY, SB_TURNS (JSON list),
// SB_AUTH=browser to authenticate the way the SDK does in a browser (WebSocket subprotocols
// `realtime` + `openai-insecure-api-key.<key>`) instead of an Authorization header.
// Prints one JSON object: the raw server events, the session's error events, and its final history.
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession } from '@openai/agents-realtime';
import { WebSocket } from 'ws';

const turns = JSON.parse(process.env.SB_TURNS);
const browser = process.env.SB_AUTH === 'browser';
let socket = null;
const transport = new OpenAIRealtimeWebSocket({
  url: process.env.SB_URL,
  useInsecureApiKey: true,
  ...(browser ? { createWebSocket: async ({ url, apiKey }) => (socket = new WebSocket(url, ['realtime', `openai-insecure-api-key.${apiKey}`])) } : {}),
});
const agent = new RealtimeAgent({ name: 'caller', instructions: 'Help the caller.' });
// A text client: text answers, no server VAD (the edge honours both since it speaks; spoken turns: test_voice.py).
const config = { outputModalities: ['text'], audio: { input: { turnDetection: null } } };
const session = new RealtimeSession(agent, { transport, config });
const events = [];
const errors = [];
const waiters = [];
session.on('transport_event', (event) => {
  events.push(event);
  for (const w of [...waiters]) if (w.type === event.type) { waiters.splice(waiters.indexOf(w), 1); w.resolve(event); }
});
session.on('error', (err) => errors.push(String(err?.error?.message ?? err?.error ?? err)));
const next = (type) => new Promise((resolve) => waiters.push({ type, resolve }));
setTimeout(() => { console.error('timed out; events so far:', JSON.stringify(events)); process.exit(3); }, 30000).unref();

const created = next('session.created');
await session.connect({ apiKey: process.env.SB_API_KEY, url: process.env.SB_URL });
await created;
for (const text of turns) {
  const done = next('response.done');
  session.sendMessage(text);
  await done;
}
const history = session.history.map((item) => ({ type: item.type, role: item.role, content: item.content }));
session.close();
console.log(JSON.stringify({ events, errors, history, subprotocol: socket?.protocol ?? null }));
