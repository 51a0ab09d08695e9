// A node program keeping native memory from JavaScript, for
// test_python_frames.py: retainNativeBuffers keeps Buffer.allocUnsafeSlow
// buffers (their memory is malloc'd by node's array buffer allocator).
// Prints LEAKED when they are kept, then waits for end of input.
"use strict";

const kept = [];

function retainNativeBuffers(n) {
  for (let i = 0; i < n; i++) {
    kept.push(Buffer.allocUnsafeSlow(8192 + (i % 64)));
  }
}

// Enough calls for V8 to compile it (interpreted frames have no name of
// their own in the perf map without --interpreted-frames-native-stack).
for (let round = 0; round < 1000; round++) {
  retainNativeBuffers(2);
}
process.stdout.write("LEAKED\n");
process.stdin.resume();
process.stdin.on("end", () => process.exit(0));
