/**
 * Asks a question on the terminal (stderr for the question, so stdout stays
 * for results), as docker/podman/skopeo login do. A hidden answer is read
 * in raw mode, so nothing is echoed; the terminal mode is restored on every
 * way out, Ctrl-C included.
 */
export async function prompt(question: string, hidden: boolean): Promise<string> {
  const input = process.stdin;
  const raw = typeof input.setRawMode === "function";
  // Echo goes off before the question shows: a user (or a script) answering
  // the moment the prompt appears must not have the password echoed.
  if (raw) input.setRawMode(true);
  process.stderr.write(question);
  input.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let answer = "";
      const onData = (chunk: Buffer) => {
        for (const char of chunk.toString("utf8")) {
          if (char === "\r" || char === "\n" || char === "\u0004") {
            input.off("data", onData);
            input.off("end", onEnd);
            process.stderr.write("\n");
            resolve(answer);
            return;
          }
          if (char === "\u0003") {
            input.off("data", onData);
            process.stderr.write("\n");
            reject(Object.assign(new Error("interrupted"), { interrupted: true }));
            return;
          }
          if (char === "\u007f" || char === "\b") {
            if (answer.length > 0) {
              answer = answer.slice(0, -1);
              if (!hidden) process.stderr.write("\b \b");
            }
            continue;
          }
          answer += char;
          if (!hidden && raw) process.stderr.write(char);
        }
      };
      const onEnd = () => {
        input.off("data", onData);
        resolve(answer);
      };
      input.on("data", onData);
      input.once("end", onEnd);
    });
  } catch (error) {
    if ((error as { interrupted?: boolean }).interrupted) {
      if (raw) input.setRawMode(false);
      process.exit(130);
    }
    throw error;
  } finally {
    if (raw) input.setRawMode(false);
    input.pause();
  }
}
