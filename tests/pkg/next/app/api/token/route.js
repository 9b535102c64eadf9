// The app's token endpoint: a real one checks that the user may watch the run and mints a
// token for it; here the demo relay mints it.
export async function GET(request) {
  const run = new URL(request.url).searchParams.get("run") ?? "";
  const relay = process.env.RELAY_URL ?? "http://127.0.0.1:8080";
  const res = await fetch(`${relay}/demo/token?run=${encodeURIComponent(run)}`, { cache: "no-store" });
  if (!res.ok) return new Response("relay refused a token", { status: 502 });
  return new Response(await res.text(), { headers: { "content-type": "text/plain" } });
}
