// What both pages of the libwebrtc peer need: the signalling, which crosses the emulated
// link (a request that fails is tried again), and the end of ICE gathering.
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function request(path, init) {
  for (let i = 0; ; i++) {
    try {
      return await fetch(path, init);
    } catch (e) {
      if (i >= 20) throw e;
      await sleep(250);
    }
  }
}

export const say = (name, body = "") => request(`/event/${name}`, { method: "POST", body });

export async function poll(path) {
  for (;;) {
    const r = await request(path);
    if (r.status === 200) return r.text();
    await sleep(100);
  }
}

export function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((r) => pc.addEventListener("icegatheringstatechange", () => {
    if (pc.iceGatheringState === "complete") r();
  }));
}
