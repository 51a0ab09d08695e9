// Keeps native buffers (Buffer.allocUnsafeSlow: malloc'd outside V8's heap)
// from one function, called often enough that V8 optimises it part-way:
// allocations then reach the library through another entry stub.
// Each line on stdin adds a round of buffers and prints GREW <total>.
"use strict";
const kept = [];
function keep(n) {
  for (let i = 0; i < n; i++) kept.push(Buffer.allocUnsafeSlow(4096));
}
const each = Number(process.argv[2] || 20000);
console.log("READY");
let rounds = 0;
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  for (const _ of chunk.split("\n").slice(0, -1)) {
    keep(each);
    rounds++;
    console.log(`GREW ${kept.length}`);
  }
});
