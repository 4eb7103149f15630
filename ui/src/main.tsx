// The Ferry web UI: repositories → tags → image (tree, config, foreign layers,
// referrers), foreign-source health and GC for admins. Routes live in the
// URL hash (#/r/NAME, #/i/NAME@REF, #/sources, #/gc), so the server serves
// one page and every view can be bookmarked.
import { render } from "preact";
import { useCallback, useEffect, useMemo, useState } from "preact/hooks";
import type { JSX } from "preact";
import * as api from "./api";
import "./style.css";

type Route =
  | { view: "repositories" }
  | { view: "repository"; name: string }
  | { view: "image"; name: string; reference: string }
  | { view: "sources" }
  | { view: "gc" };

/** A link may carry a broken escape (#/r/%): decodeURIComponent would throw and leave a blank page; that route is the list. */
function decodeHash(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return "";
  }
}

function parseRoute(hash: string): Route {
  const path = decodeHash(hash.replace(/^#\/?/, ""));
  if (path.startsWith("r/")) return { view: "repository", name: path.slice(2) };
  if (path.startsWith("i/")) {
    const rest = path.slice(2);
    const at = rest.lastIndexOf("@");
    if (at > 0) return { view: "image", name: rest.slice(0, at), reference: rest.slice(at + 1) };
  }
  if (path === "sources") return { view: "sources" };
  if (path === "gc") return { view: "gc" };
  return { view: "repositories" };
}

const href = {
  repository: (name: string) => `#/r/${name}`,
  image: (name: string, reference: string) => `#/i/${name}@${reference}`,
};

function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const onChange = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onChange);
    return () => removeEventListener("hashchange", onChange);
  }, []);
  return route;
}

/** Loads `load()` whenever `deps` change; `reload` runs it again. */
function useLoad<T>(load: () => Promise<T>, deps: unknown[]): { data: T | null; error: api.ApiError | Error | null; reload: () => void } {
  const [state, setState] = useState<{ data: T | null; error: Error | null }>({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (data) => live && setState({ data, error: null }),
      (error: Error) => live && setState({ data: null, error }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { ...state, reload: useCallback(() => setTick((t) => t + 1), []) };
}

// ---------- formatting ----------

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function time(ms: number | null | undefined): string {
  if (!ms) return "—";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

const short = (digest: string) => digest.replace(/^sha256:/, "").slice(0, 12);

// ---------- shared pieces ----------

function Copy({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // clipboard refused (plain HTTP in some browsers): select-and-copy by hand still works
    }
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  };
  return (
    <button type="button" class="small" onClick={copy} aria-label={`Copy ${label}`}>
      {done ? "Copied" : "Copy"}
    </button>
  );
}

function ErrorBox({ error }: { error: Error | null }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {error.message}
    </p>
  );
}

function Loading() {
  return <p aria-live="polite">Loading…</p>;
}

function StateBadge({ state }: { state: string }) {
  return <span class={`badge state-${state}`}>{state}</span>;
}

/** Asks before a destructive action; keyboard reachable, Escape cancels. */
function Confirm({ text, onConfirm, onCancel }: { text: string; onConfirm: () => void; onCancel: () => void }) {
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && onCancel();
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [onCancel]);
  return (
    <div class="confirm" role="alertdialog" aria-modal="true" aria-labelledby="confirm-text">
      <p id="confirm-text">{text}</p>
      <button type="button" class="danger" onClick={onConfirm} autoFocus>
        Delete
      </button>{" "}
      <button type="button" onClick={onCancel}>
        Cancel
      </button>
    </div>
  );
}

// ---------- header and sign-in ----------

function SignIn({ onDone }: { onDone: () => void }) {
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<Error | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: JSX.TargetedEvent<HTMLFormElement>) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api.signIn(user, password);
      setPassword("");
      onDone();
    } catch (err) {
      setError(err as Error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="signin" onSubmit={submit} aria-label="Sign in">
      <label>
        User <input name="username" autoComplete="username" value={user} onInput={(e) => setUser(e.currentTarget.value)} required />
      </label>
      <label>
        Password{" "}
        <input name="password" type="password" autoComplete="current-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} required />
      </label>
      <button type="submit" disabled={busy}>
        Sign in
      </button>
      <ErrorBox error={error} />
    </form>
  );
}

/** "auto" follows the system (prefers-color-scheme); "dark" and "light" override it (html[data-theme], style.css). */
function applyTheme(theme: string): void {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  try {
    localStorage.setItem("ferry.theme", theme);
  } catch {
    // storage disabled: the choice lasts as long as the page
  }
}

function savedTheme(): string {
  try {
    return localStorage.getItem("ferry.theme") ?? "auto";
  } catch {
    return "auto";
  }
}

// Applied before the first render, so a dark choice never flashes light.
applyTheme(savedTheme());

function ThemeToggle() {
  const [theme, setTheme] = useState(savedTheme);
  const next = theme === "auto" ? "dark" : theme === "dark" ? "light" : "auto";
  const choose = () => {
    applyTheme(next);
    setTheme(next);
  };
  return (
    <button type="button" class="small" onClick={choose} aria-label={`Theme: ${theme}. Switch to ${next}`}>
      Theme: {theme}
    </button>
  );
}

function Header({ session, onSession }: { session: api.Session | null; onSession: () => void }) {
  const [signingIn, setSigningIn] = useState(false);
  return (
    <header>
      <nav aria-label="Main">
        <a href="#/" class="brand">
          Ferry
        </a>
        <a href="#/">Repositories</a>
        {session?.admin && <a href="#/sources">Foreign sources</a>}
        {session?.admin && <a href="#/gc">Garbage collection</a>}
      </nav>
      <div class="who">
        <ThemeToggle />
        {session?.user ? (
          <>
            <span>
              Signed in as <strong>{session.user}</strong>
              {session.admin ? " (admin)" : ""}
            </span>
            <button
              type="button"
              class="small"
              onClick={() => {
                api.signOut();
                onSession();
              }}
            >
              Sign out
            </button>
          </>
        ) : session?.authRequired && session.tokenService ? (
          signingIn ? (
            <SignIn
              onDone={() => {
                setSigningIn(false);
                onSession();
              }}
            />
          ) : (
            <button type="button" onClick={() => setSigningIn(true)}>
              Sign in
            </button>
          )
        ) : null}
      </div>
    </header>
  );
}

// ---------- repositories ----------

function Repositories({ session }: { session: api.Session }) {
  const [search, setSearch] = useState("");
  const [query, setQuery] = useState("");
  // The cursors of the pages before this one: Previous pops, Next pushes.
  const [cursors, setCursors] = useState<Array<string | undefined>>([undefined]);
  const cursor = cursors[cursors.length - 1];
  const { data, error } = useLoad(() => api.listRepositories(query, cursor), [query, cursor, session.user]);
  useEffect(() => {
    // Debounced; only a changed search starts again from the first page.
    const wanted = search.trim();
    if (wanted === query) return;
    const timer = setTimeout(() => {
      setQuery(wanted);
      setCursors([undefined]);
    }, 200);
    return () => clearTimeout(timer);
  }, [search]);
  return (
    <main>
      <h1>Repositories</h1>
      <label class="search">
        Search repositories <input type="search" value={search} onInput={(e) => setSearch(e.currentTarget.value)} placeholder="name contains…" />
      </label>
      <ErrorBox error={error} />
      {!data && !error && <Loading />}
      {data && (
        <>
          <p class="muted" aria-live="polite" data-testid="repo-total">
            {data.total} {data.total === 1 ? "repository" : "repositories"}
            {session.user === null && session.authRequired ? " (public; sign in to see more)" : ""}
          </p>
          <table class="list">
            <thead>
              <tr>
                <th scope="col">Repository</th>
                <th scope="col">Tags</th>
                <th scope="col">Size</th>
                <th scope="col">Last push</th>
              </tr>
            </thead>
            <tbody>
              {data.repositories.map((r) => (
                <tr key={r.name}>
                  <td>
                    <a href={href.repository(r.name)}>{r.name}</a>
                  </td>
                  <td>{r.tags}</td>
                  <td>{bytes(r.size)}</td>
                  <td>{time(r.lastPush)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <div class="pager">
            <button type="button" disabled={cursors.length === 1} onClick={() => setCursors(cursors.slice(0, -1))}>
              Previous page
            </button>
            <button type="button" disabled={!data.next} onClick={() => setCursors([...cursors, data.next])}>
              Next page
            </button>
          </div>
        </>
      )}
    </main>
  );
}

// ---------- one repository ----------

type SortKey = "tag" | "size" | "createdAt" | "pushedAt";

function pullCommands(name: string, reference: string): Array<[string, string]> {
  const host = location.host;
  const plain = location.protocol === "http:";
  const ref = reference.includes(":") ? `${host}/${name}@${reference}` : `${host}/${name}:${reference}`;
  const local = name.split("/").pop() ?? name;
  return [
    ["podman", `podman pull ${plain ? "--tls-verify=false " : ""}${ref}`],
    ["docker", `docker pull ${ref}`],
    ["skopeo", `skopeo copy ${plain ? "--src-tls-verify=false " : ""}docker://${ref} oci:${local}:${reference.includes(":") ? "latest" : reference}`],
    ["ferry", `ferry pull ${plain ? "--insecure " : ""}${ref} oci:${local}:${reference.includes(":") ? "latest" : reference}`],
  ];
}

function PullCommands({ name, reference }: { name: string; reference: string }) {
  return (
    <ul class="pull" aria-label="Pull commands">
      {pullCommands(name, reference).map(([tool, command]) => (
        <li key={tool}>
          <code>{command}</code> <Copy text={command} label={`${tool} pull command`} />
        </li>
      ))}
    </ul>
  );
}

function Repository({ session, name }: { session: api.Session; name: string }) {
  const { data, error, reload } = useLoad(() => api.getRepository(name), [name, session.user]);
  const [filter, setFilter] = useState("");
  const [sort, setSort] = useState<{ key: SortKey; descending: boolean }>({ key: "pushedAt", descending: true });
  const [confirm, setConfirm] = useState<string | null>(null);
  const [actionError, setActionError] = useState<Error | null>(null);
  const rows = useMemo(() => {
    if (!data) return [];
    const needle = filter.trim().toLowerCase();
    const kept = data.tags.filter((t) => needle === "" || t.tag.toLowerCase().includes(needle) || t.digest.includes(needle) || t.platforms.some((p) => p.includes(needle)));
    const sign = sort.descending ? -1 : 1;
    return [...kept].sort((a, b) => {
      const x = a[sort.key];
      const y = b[sort.key];
      return (x < y ? -1 : x > y ? 1 : 0) * sign;
    });
  }, [data, filter, sort]);
  const header = (key: SortKey, label: string) => {
    const active = sort.key === key;
    return (
      <th scope="col" aria-sort={active ? (sort.descending ? "descending" : "ascending") : "none"}>
        <button type="button" class="sort" onClick={() => setSort({ key, descending: active ? !sort.descending : key !== "tag" })}>
          {label}
          {active ? (sort.descending ? " ▼" : " ▲") : ""}
        </button>
      </th>
    );
  };
  const remove = async (tag: string) => {
    setConfirm(null);
    setActionError(null);
    try {
      await api.deleteReference(name, tag, session);
      reload();
    } catch (err) {
      setActionError(err as Error);
    }
  };
  return (
    <main>
      <p class="crumbs">
        <a href="#/">Repositories</a> / {name}
      </p>
      <h1>{name}</h1>
      <ErrorBox error={error} />
      <ErrorBox error={actionError} />
      {!data && !error && <Loading />}
      {confirm && <Confirm text={`Delete tag ${confirm} of ${name}? The image stays if other tags or digests reference it.`} onConfirm={() => remove(confirm)} onCancel={() => setConfirm(null)} />}
      {data && (
        <>
          <label class="search">
            Filter tags <input type="search" value={filter} onInput={(e) => setFilter(e.currentTarget.value)} placeholder="tag, digest or platform" />
          </label>
          {data.truncated && <p class="muted">Showing the first {data.tags.length} tags by name.</p>}
          <table class="list">
            <thead>
              <tr>
                {header("tag", "Tag")}
                <th scope="col">Digest</th>
                {header("size", "Size")}
                <th scope="col">Platforms</th>
                {header("createdAt", "Created")}
                {header("pushedAt", "Pushed")}
                {data.canDelete && <th scope="col">Actions</th>}
              </tr>
            </thead>
            <tbody>
              {rows.map((t) => (
                <tr key={t.tag}>
                  <td>
                    <a href={href.image(name, t.tag)}>{t.tag}</a>
                    {t.kind === "index" && <span class="badge">index</span>}
                  </td>
                  <td>
                    <code title={t.digest}>{short(t.digest)}</code>
                  </td>
                  <td>{bytes(t.size)}</td>
                  <td>{t.platforms.join(", ") || (t.artifactType ?? "—")}</td>
                  <td>{time(t.createdAt)}</td>
                  <td>{time(t.pushedAt)}</td>
                  {data.canDelete && (
                    <td>
                      <button type="button" class="small danger" onClick={() => setConfirm(t.tag)} aria-label={`Delete tag ${t.tag}`}>
                        Delete
                      </button>
                    </td>
                  )}
                </tr>
              ))}
            </tbody>
          </table>
          {rows[0] && (
            <section>
              <h2>Pull {rows[0].tag}</h2>
              <PullCommands name={name} reference={rows[0].tag} />
            </section>
          )}
        </>
      )}
    </main>
  );
}

// ---------- one image ----------

function Layer({ layer, index }: { layer: api.LayerView; index: number }) {
  const foreign = layer.foreign;
  const failing = foreign?.sources.some((s) => s.state === "failing");
  return (
    <li class={foreign ? `layer foreign${failing ? " failing" : ""}` : "layer"} data-testid={foreign ? "foreign-layer" : "layer"}>
      <div>
        <strong>Layer {index + 1}</strong> <code title={layer.digest}>{short(layer.digest)}</code> · {bytes(layer.size)} · <span class="muted">{layer.mediaType}</span>
        {foreign && <span class="badge foreign-badge">foreign</span>}
        {foreign && <span class={`badge verification-${foreign.verification}`}>{foreign.verification}</span>}
        {foreign && <span class="badge">{foreign.cached ? "cached" : "not cached"}</span>}
        {!foreign && layer.urls && <span class="badge">has URLs, held here</span>}
      </div>
      {foreign && (
        <table class="sources">
          <caption class="sr-only">Sources of layer {index + 1}</caption>
          <thead>
            <tr>
              <th scope="col">URL</th>
              <th scope="col">Policy</th>
              <th scope="col">Health</th>
              <th scope="col">Last error</th>
              <th scope="col">Checked</th>
            </tr>
          </thead>
          <tbody>
            {foreign.sources.map((s) => (
              <tr key={s.url} class={`source state-row-${s.state}`} data-testid="source">
                <td>
                  <code class="url">{s.url}</code>
                </td>
                <td>{s.allowed ? `allowed (${s.serve})` : `denied: ${s.reason}`}</td>
                <td>
                  <StateBadge state={s.state} />
                </td>
                <td>{s.lastError ?? "—"}</td>
                <td>{time(s.lastCheckedAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </li>
  );
}

function ConfigDetails({ config }: { config: api.ConfigView }) {
  return (
    <section>
      <h3>Config</h3>
      <dl class="config">
        <dt>Digest</dt>
        <dd>
          <code>{config.digest}</code> ({bytes(config.size)}, {config.mediaType})
        </dd>
        {config.os && (
          <>
            <dt>Platform</dt>
            <dd>{[config.os, config.architecture, config.variant].filter(Boolean).join("/")}</dd>
          </>
        )}
        {config.created && (
          <>
            <dt>Created</dt>
            <dd>{config.created}</dd>
          </>
        )}
        {config.entrypoint && (
          <>
            <dt>Entrypoint</dt>
            <dd>
              <code>{JSON.stringify(config.entrypoint)}</code>
            </dd>
          </>
        )}
        {config.cmd && (
          <>
            <dt>Cmd</dt>
            <dd>
              <code>{JSON.stringify(config.cmd)}</code>
            </dd>
          </>
        )}
        {config.workingDir && (
          <>
            <dt>Working dir</dt>
            <dd>{config.workingDir}</dd>
          </>
        )}
        {config.user && (
          <>
            <dt>User</dt>
            <dd>{config.user}</dd>
          </>
        )}
        {config.env && config.env.length > 0 && (
          <>
            <dt>Env</dt>
            <dd>
              <ul class="plain">
                {config.env.map((e) => (
                  <li key={e}>
                    <code>{e}</code>
                  </li>
                ))}
              </ul>
            </dd>
          </>
        )}
        {config.labels && Object.keys(config.labels).length > 0 && (
          <>
            <dt>Labels</dt>
            <dd>
              <ul class="plain">
                {Object.entries(config.labels).map(([k, v]) => (
                  <li key={k}>
                    <code>
                      {k}={v}
                    </code>
                  </li>
                ))}
              </ul>
            </dd>
          </>
        )}
      </dl>
      {config.history && config.history.length > 0 && (
        <details>
          <summary>History ({config.history.length} steps)</summary>
          <ol class="history">
            {config.history.map((h, i) => (
              <li key={i}>
                <code>{h.createdBy ?? h.comment ?? "—"}</code>
                {h.emptyLayer ? <span class="muted"> (no layer)</span> : null}
              </li>
            ))}
          </ol>
        </details>
      )}
      {config.truncated && (
        <p class="muted" role="note">
          Parts of this configuration are too long to show here and were cut; the config blob <code>{config.digest}</code> has all of it.
        </p>
      )}
    </section>
  );
}

function ImageTree({ node, name }: { node: api.ImageNode; name: string }) {
  if (node.kind === "index") {
    return (
      <ul class="tree" aria-label="Platforms">
        {(node.children ?? []).map((child) => (
          <li key={child.digest}>
            <details open={(node.children ?? []).length <= 4}>
              <summary>
                <strong>{child.platform ?? "no platform"}</strong> <code>{short(child.digest)}</code> · {bytes(child.size)}
                {!child.present && <span class="badge">not in this repository</span>}{" "}
                <a href={href.image(name, child.digest)}>open</a>
              </summary>
              {child.image && <ImageTree node={child.image} name={name} />}
            </details>
          </li>
        ))}
      </ul>
    );
  }
  return (
    <div class="tree">
      {node.artifactType && (
        <p>
          Artifact type <code>{node.artifactType}</code>
        </p>
      )}
      {node.config && <ConfigDetails config={node.config} />}
      <h3>Layers</h3>
      <ol class="layers">
        {(node.layers ?? []).map((layer, i) => (
          <Layer key={`${layer.digest}-${i}`} layer={layer} index={i} />
        ))}
      </ol>
    </div>
  );
}

function hasForeign(node: api.ImageNode): boolean {
  return (node.layers ?? []).some((l) => l.foreign) || (node.children ?? []).some((c) => c.image !== undefined && hasForeign(c.image));
}

function Image({ session, name, reference }: { session: api.Session; name: string; reference: string }) {
  const { data, error, reload } = useLoad(() => api.getImage(name, reference), [name, reference, session.user]);
  const [confirm, setConfirm] = useState(false);
  const [actionError, setActionError] = useState<Error | null>(null);
  const [checking, setChecking] = useState(false);
  const remove = async () => {
    setConfirm(false);
    try {
      await api.deleteReference(name, data!.digest, session);
      location.hash = href.repository(name);
    } catch (err) {
      setActionError(err as Error);
    }
  };
  const check = async () => {
    setChecking(true);
    setActionError(null);
    try {
      await api.verifyImage(name, reference);
    } catch (err) {
      setActionError(err as Error);
    } finally {
      setChecking(false);
      reload();
    }
  };
  return (
    <main>
      <p class="crumbs">
        <a href="#/">Repositories</a> / <a href={href.repository(name)}>{name}</a> / {reference.includes(":") ? short(reference) : reference}
      </p>
      <h1>
        {name}
        {reference.includes(":") ? "@" : ":"}
        {reference}
      </h1>
      <ErrorBox error={error} />
      <ErrorBox error={actionError} />
      {!data && !error && <Loading />}
      {confirm && data && (
        <Confirm
          text={`Delete manifest ${short(data.digest)} of ${name}, with every tag pointing at it (${data.tags.join(", ") || "none"})?`}
          onConfirm={remove}
          onCancel={() => setConfirm(false)}
        />
      )}
      {data && (
        <>
          <dl class="config">
            <dt>Digest</dt>
            <dd>
              <code>{data.digest}</code> <Copy text={data.digest} label="digest" />
            </dd>
            <dt>Media type</dt>
            <dd>{data.mediaType}</dd>
            <dt>Tags</dt>
            <dd>{data.tags.join(", ") || "—"}</dd>
          </dl>
          <div class="actions">
            {data.canDelete && (
              <button type="button" class="danger" onClick={() => setConfirm(true)}>
                Delete manifest
              </button>
            )}
            {session.admin && hasForeign(data) && (
              <button type="button" onClick={check} disabled={checking}>
                {checking ? "Checking sources…" : "Check foreign sources now"}
              </button>
            )}
          </div>
          <section>
            <h2>{data.kind === "index" ? "Index" : "Image"}</h2>
            <ImageTree node={data} name={name} />
          </section>
          <section>
            <h2>Referrers</h2>
            {Object.keys(data.referrers).length === 0 ? (
              <p class="muted">No signatures, SBOMs or attestations refer to this manifest.</p>
            ) : (
              Object.entries(data.referrers).map(([type, items]) => (
                <div key={type}>
                  <h3>
                    <code>{type}</code> ({items.length})
                  </h3>
                  <ul>
                    {items.map((r) => (
                      <li key={r.digest}>
                        <a href={href.image(name, r.digest)}>
                          <code>{short(r.digest)}</code>
                        </a>{" "}
                        {bytes(r.size)}
                      </li>
                    ))}
                  </ul>
                </div>
              ))
            )}
          </section>
          <section>
            <h2>Pull</h2>
            <PullCommands name={name} reference={reference} />
          </section>
          <details>
            <summary>Raw manifest ({bytes(data.size)})</summary>
            <pre class="raw">{data.raw}</pre>
            <Copy text={data.raw} label="raw manifest" />
          </details>
        </>
      )}
    </main>
  );
}

// ---------- admin: sources and GC ----------

const STATE_ORDER: Record<string, number> = { failing: 0, degraded: 1, unknown: 2, healthy: 3 };

function Sources({ session }: { session: api.Session }) {
  const { data, error, reload } = useLoad(() => api.listSources(), [session.user]);
  const [failingFirst, setFailingFirst] = useState(true);
  const rows = useMemo(() => {
    const sources = data?.sources ?? [];
    if (!failingFirst) return sources;
    return [...sources].sort((a, b) => (STATE_ORDER[a.state] ?? 9) - (STATE_ORDER[b.state] ?? 9) || b.consecutiveFailures - a.consecutiveFailures);
  }, [data, failingFirst]);
  return (
    <main>
      <h1>Foreign sources</h1>
      <ErrorBox error={error} />
      <div class="actions">
        <label>
          <input type="checkbox" checked={failingFirst} onChange={(e) => setFailingFirst(e.currentTarget.checked)} /> Failing first
        </label>{" "}
        <button type="button" onClick={reload}>
          Refresh
        </button>
      </div>
      {data && (
        <table class="list">
          <thead>
            <tr>
              <th scope="col">URL</th>
              <th scope="col">Health</th>
              <th scope="col">OK / failed</th>
              <th scope="col">Last error</th>
              <th scope="col">Latency</th>
              <th scope="col">Checked</th>
              <th scope="col">Policy</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((s) => (
              <tr key={s.url} class={`source state-row-${s.state}`}>
                <td>
                  <code class="url">{s.url}</code>
                  {!s.referenced && <span class="muted"> (unreferenced)</span>}
                </td>
                <td>
                  <StateBadge state={s.state} />
                </td>
                <td>
                  {s.successes} / {s.failures}
                </td>
                <td>{s.lastError ?? "—"}</td>
                <td>{s.lastLatencyMs === null ? "—" : `${s.lastLatencyMs} ms`}</td>
                <td>{time(s.lastCheckedAt)}</td>
                <td>{s.policy.allowed ? s.policy.rule : `denied: ${s.policy.reason}`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </main>
  );
}

function Gc({ session }: { session: api.Session }) {
  const { data, error, reload } = useLoad(() => api.getGc(), [session.user]);
  const [running, setRunning] = useState(false);
  const [runError, setRunError] = useState<Error | null>(null);
  const run = async () => {
    setRunning(true);
    setRunError(null);
    try {
      await api.runGc();
    } catch (err) {
      setRunError(err as Error);
    } finally {
      setRunning(false);
      reload();
    }
  };
  const last = data?.last;
  return (
    <main>
      <h1>Garbage collection</h1>
      <p class="muted">Deletes blobs no manifest references, older than the configured grace period.</p>
      <ErrorBox error={error ?? runError} />
      <button type="button" onClick={run} disabled={running || data?.running}>
        {running || data?.running ? "Running…" : "Run garbage collection"}
      </button>
      <h2>Last run</h2>
      {!last ? (
        <p class="muted">None since the registry started.</p>
      ) : (
        <dl class="config" data-testid="gc-last">
          <dt>Finished</dt>
          <dd>{time(last.finishedAt)}</dd>
          <dt>Took</dt>
          <dd>{last.finishedAt - last.startedAt} ms</dd>
          {last.error && (
            <>
              <dt>Error</dt>
              <dd class="error">{last.error}</dd>
            </>
          )}
          {last.report && (
            <>
              <dt>Blobs deleted</dt>
              <dd>{last.report.blobsDeleted}</dd>
              <dt>Manifests deleted</dt>
              <dd>{last.report.manifestsDeleted}</dd>
              <dt>Links deleted</dt>
              <dd>{last.report.linksDeleted}</dd>
              <dt>Leftover files removed</dt>
              <dd>{last.report.untrackedDeleted}</dd>
              {last.report.skipped && (
                <>
                  <dt>Skipped</dt>
                  <dd>another process was collecting</dd>
                </>
              )}
            </>
          )}
        </dl>
      )}
    </main>
  );
}

// ---------- app ----------

function App() {
  const route = useRoute();
  const [sessionTick, setSessionTick] = useState(0);
  const { data: session, error } = useLoad(() => api.getSession(), [sessionTick]);
  const refreshSession = useCallback(() => setSessionTick((t) => t + 1), []);
  let view: JSX.Element | null = null;
  if (session) {
    if (route.view === "repository") view = <Repository session={session} name={route.name} />;
    else if (route.view === "image") view = <Image session={session} name={route.name} reference={route.reference} />;
    else if (route.view === "sources") view = <Sources session={session} />;
    else if (route.view === "gc") view = <Gc session={session} />;
    else view = <Repositories session={session} />;
  }
  return (
    <>
      <Header session={session} onSession={refreshSession} />
      <ErrorBox error={error} />
      {view ?? (!error && <Loading />)}
    </>
  );
}

// The repository list is what most visits open: ask for it now, not after the session arrives.
if (parseRoute(location.hash).view === "repositories") api.prefetchRepositories();
render(<App />, document.getElementById("app")!);
