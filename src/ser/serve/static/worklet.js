// The demo's capture worklet: copies each 128-sample block of the first input channel to the main thread.
class SerTap extends AudioWorkletProcessor {
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (ch && ch.length) this.port.postMessage(ch.slice(0));
    return true;
  }
}
registerProcessor("ser-tap", SerTap);
