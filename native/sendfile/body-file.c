/*
 * receiveFile: the rest of a request body, from the connection into an
 * upload's file, hashed on the way, without the JS thread in between.
 *
 * Why: with sendfile.c's receive, every 1 MiB of a pushed body took a thread
 * start (the receive), a completion on the JS thread, a libuv pool write
 * (O_DIRECT), its completion, a message to the hashing thread and its answer:
 * six hand-offs between threads per MiB. On this VM a thread wake-up is
 * expensive (38% of the JS thread's profile during pushes was the hypervisor's
 * interrupt re-enable under them; docs/benchmarks-history.md, "Speed round 9"). Here
 * one job per body runs three threads that pass the body's slabs along a
 * ring: the receiver recv()s into a slab, the hasher runs SHA-256 over it,
 * the writer writes it (O_DIRECT) and hands it back to the receiver. The JS
 * thread hears of it once, when the body is in the file.
 *
 * JS API:
 *   receiveFile(socketFd, directFd, bufferedFd, position, slabs, prefilled,
 *               state, length, idleTimeoutMs, done) -> handle
 *     slabs: 1..MAX_SLOTS Uint8Arrays of one length, a multiple of ALIGN.
 *     slabs[0][0, prefilled) already holds body bytes (not yet hashed or
 *     written) that belong at `position`; the job receives exactly `length`
 *     more after them, hashes all of them into `state` (a SHA-256 state,
 *     see below; null = no hash) and writes them at `position` on: whole
 *     slabs to directFd (opened with O_DIRECT), the last slab's unaligned
 *     tail to bufferedFd (the same file, through the page cache). A direct
 *     write the filesystem refuses (EINVAL) is made through bufferedFd, and
 *     so is the rest of the body.
 *     done(errno, received, directBytes, bufferedBytes, diskFailed) is called
 *     once on the JS thread, after every thread of the job ended: no write
 *     lands and no slab is touched after it. errno 0 = every byte is in the
 *     file; ECONNRESET = the peer closed early; ETIMEDOUT = no byte for
 *     idleTimeoutMs; ECANCELED = cancelled; with diskFailed the errno is the
 *     file's (ENOSPC, EIO...). EAGAIN = not every thread could be started.
 *   cancelReceiveFile(handle) -> boolean (true if the job was still running)
 *   sha256Init(state), sha256Update(state, bytes), sha256Digest(state) -> Buffer
 *     A SHA-256 state kept in JS memory (a Uint8Array of at least
 *     sha256StateBytes bytes), so a running hash can be continued by a job
 *     here and by the JS thread in turn. Present only when the process
 *     exports OpenSSL's SHA-256 functions (Node does, for addons).
 *
 * The safety argument of sendfile.c's receive holds: the job uses its own
 * duplicates of the three descriptors and closes them itself; every signal is
 * blocked on its threads; cancellation sets a flag and wakes the receiver's
 * poll through an eventfd, without touching the connection; the receiver never
 * reads past `length`. The slabs and the state are held (napi references) and
 * must not be touched by JS until done() ran. The job has four references:
 * the JS handle's, the completion call's, its threads' (dropped by the last
 * one to end) and the teardown hook's.
 */
#define _GNU_SOURCE
#include "common.h"
#include <dlfcn.h>
#include <openssl/sha.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SLOTS 8
/* Block size every direct write is a multiple of (as src/storage/direct-file-writer.ts's DIRECT_ALIGN). */
#define ALIGN 4096

/* OpenSSL's, looked up at load: the addon links against nothing, and loads where they are missing. */
static int (*sha_init)(SHA256_CTX *);
static int (*sha_update)(SHA256_CTX *, const void *, size_t);
static int (*sha_final)(unsigned char *, SHA256_CTX *);

/* Where a slab is on the ring: whose turn it is. */
enum { FOR_RECEIVER, FOR_HASHER, FOR_WRITER };

typedef struct {
  char *p;
  size_t fill;
  int64_t pos; /* file position of p[0] */
  int turn;
  int last;
} slot_t;

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t moved; /* a slot changed hands, or the job failed */
  pthread_cond_t ended_cond;
  int ended;
  int running; /* threads not yet ended (under lock) */
  int sock, wake_fd, direct_fd, buffered_fd; /* our duplicates; closed by the last thread */
  slot_t slots[MAX_SLOTS];
  int nslots;
  size_t slab_bytes, prefilled;
  int64_t position, remaining, received, direct, buffered;
  SHA256_CTX *state;
  int idle_ms;
  int direct_broken; /* the writer's */
  int failed, err, disk; /* the first failure (under lock) */
  atomic_int cancelled;
  atomic_int stopping; /* failed, for the receiver's loop, which does not take the lock per recv */
  atomic_int refs;
  napi_ref keep[MAX_SLOTS + 1];
  napi_threadsafe_function tsfn;
  int hooked;
} file_job_t;

static void file_job_unref(file_job_t *j) {
  if (atomic_fetch_sub(&j->refs, 1) == 1) {
    pthread_cond_destroy(&j->moved);
    pthread_cond_destroy(&j->ended_cond);
    pthread_mutex_destroy(&j->lock);
    free(j);
  }
}

static void wake_receiver(file_job_t *j) {
  uint64_t one = 1;
  ssize_t woke = write(j->wake_fd, &one, sizeof one);
  (void)woke;
}

/* Records the job's first failure and wakes every thread, which then stop. Nothing once they all ended: the result stands. */
static void fail(file_job_t *j, int err, int disk) {
  pthread_mutex_lock(&j->lock);
  if (!j->failed && j->running > 0) {
    j->failed = 1;
    j->err = err;
    j->disk = disk;
    atomic_store(&j->stopping, 1);
  }
  pthread_cond_broadcast(&j->moved);
  if (j->wake_fd >= 0) wake_receiver(j);
  pthread_mutex_unlock(&j->lock);
}

/* Waits until slot i is `turn`'s; 0 when the job failed meanwhile. */
static int await_turn(file_job_t *j, int i, int turn) {
  pthread_mutex_lock(&j->lock);
  while (j->slots[i].turn != turn && !j->failed) pthread_cond_wait(&j->moved, &j->lock);
  int ok = !j->failed;
  pthread_mutex_unlock(&j->lock);
  return ok;
}

static void pass_on(file_job_t *j, int i, int turn) {
  pthread_mutex_lock(&j->lock);
  j->slots[i].turn = turn;
  pthread_cond_broadcast(&j->moved);
  pthread_mutex_unlock(&j->lock);
}

/* A thread's end: the last one closes the descriptors and reports. */
static void thread_end(file_job_t *j) {
  pthread_mutex_lock(&j->lock);
  int last = --j->running == 0;
  if (last) {
    close(j->sock);
    close(j->wake_fd);
    close(j->direct_fd);
    close(j->buffered_fd);
    j->sock = j->wake_fd = j->direct_fd = j->buffered_fd = -1;
    if (j->failed && j->err != 0 && !j->disk && atomic_load(&j->cancelled)) j->err = ECANCELED;
  }
  pthread_mutex_unlock(&j->lock);
  if (last) REPORT_AND_END(j, file_job_unref);
}

/* Receives exactly `want` bytes into p: 0 or the errno that ends the job. */
static int receive_exactly(file_job_t *j, char *p, size_t want, int64_t *last_progress) {
  while (want > 0) {
    /* Stopping: another thread failed (a write), and the eventfd that woke the poll stays readable. */
    if (atomic_load(&j->cancelled) || atomic_load(&j->stopping)) return ECANCELED;
    ssize_t n = recv(j->sock, p, want, 0);
    if (n > 0) {
      p += n;
      want -= (size_t)n;
      j->received += n;
      *last_progress = now_ms();
      continue;
    }
    if (n == 0) return ECONNRESET; /* the peer closed before the body ended */
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno;
    int64_t left = (int64_t)j->idle_ms - (now_ms() - *last_progress);
    if (left <= 0) return ETIMEDOUT;
    struct pollfd fds[2] = {{.fd = j->sock, .events = POLLIN}, {.fd = j->wake_fd, .events = POLLIN}};
    int r = poll(fds, 2, left > INT32_MAX ? INT32_MAX : (int)left);
    if (r < 0 && errno != EINTR) return errno;
  }
  return 0;
}

static void *run_receiver(void *arg) {
  file_job_t *j = arg;
  int64_t pos = j->position, last_progress = now_ms();
  size_t held = j->prefilled; /* only the first slab arrives holding bytes */
  for (int i = 0;; i = (i + 1) % j->nslots) {
    if (!await_turn(j, i, FOR_RECEIVER)) break;
    /* Waiting for the disk is not the client being idle. */
    int64_t now = now_ms();
    if (now > last_progress) last_progress = now;
    slot_t *s = &j->slots[i];
    size_t want = j->slab_bytes - held;
    if ((uint64_t)j->remaining < want) want = (size_t)j->remaining;
    int err = receive_exactly(j, s->p + held, want, &last_progress);
    if (err != 0) {
      fail(j, err, 0);
      break;
    }
    s->fill = held + want;
    s->pos = pos;
    pos += (int64_t)s->fill;
    held = 0;
    j->remaining -= (int64_t)want;
    s->last = j->remaining == 0;
    pass_on(j, i, j->state != NULL ? FOR_HASHER : FOR_WRITER);
    if (s->last) break;
  }
  thread_end(j);
  return NULL;
}

static void *run_hasher(void *arg) {
  file_job_t *j = arg;
  for (int i = 0;; i = (i + 1) % j->nslots) {
    if (!await_turn(j, i, FOR_HASHER)) break;
    slot_t *s = &j->slots[i];
    sha_update(j->state, s->p, s->fill);
    int last = s->last;
    pass_on(j, i, FOR_WRITER);
    if (last) break;
  }
  thread_end(j);
  return NULL;
}

/* Positional writes may be short (signals, full disks): continues until all is down. 0 or an errno. */
static int write_all(int fd, const char *p, size_t length, int64_t pos) {
  while (length > 0) {
    ssize_t n = pwrite(fd, p, length, (off_t)pos);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    p += n;
    length -= (size_t)n;
    pos += n;
  }
  return 0;
}

/* Direct writes end at a block boundary: the last slab's tail (< ALIGN) goes through the page cache. */
static int write_slot(file_job_t *j, slot_t *s) {
  size_t aligned = s->last ? s->fill - s->fill % ALIGN : s->fill;
  int err;
  if (aligned > 0 && !j->direct_broken) {
    err = write_all(j->direct_fd, s->p, aligned, s->pos);
    /* The filesystem takes O_DIRECT at open but not these writes: the page cache, from here on. */
    if (err == EINVAL) j->direct_broken = 1;
    else if (err != 0) return err;
    else j->direct += (int64_t)aligned;
  }
  if (aligned > 0 && j->direct_broken) {
    if ((err = write_all(j->buffered_fd, s->p, aligned, s->pos)) != 0) return err;
    j->buffered += (int64_t)aligned;
  }
  if (s->fill > aligned) {
    if ((err = write_all(j->buffered_fd, s->p + aligned, s->fill - aligned, s->pos + (int64_t)aligned)) != 0) return err;
    j->buffered += (int64_t)(s->fill - aligned);
  }
  return 0;
}

static void *run_writer(void *arg) {
  file_job_t *j = arg;
  for (int i = 0;; i = (i + 1) % j->nslots) {
    if (!await_turn(j, i, FOR_WRITER)) break;
    slot_t *s = &j->slots[i];
    int err = write_slot(j, s);
    if (err != 0) {
      fail(j, err, 1);
      break;
    }
    int last = s->last;
    pass_on(j, i, FOR_RECEIVER);
    if (last) break;
  }
  thread_end(j);
  return NULL;
}

/* As sendfile.c's teardown hooks: the slabs' memory and the threadsafe function go with the environment. */
static void teardown_body_file(void *arg) {
  file_job_t *j = arg;
  j->hooked = 0;
  atomic_store(&j->cancelled, 1);
  fail(j, ECANCELED, 0);
  WAIT_ENDED(j);
  file_job_unref(j);
}

static void release_keeps(napi_env env, file_job_t *j) {
  for (int i = 0; i <= MAX_SLOTS; i++) {
    if (j->keep[i] != NULL) napi_delete_reference(env, j->keep[i]);
    j->keep[i] = NULL;
  }
}

static void call_body_file_done(napi_env env, napi_value done, void *context, void *data) {
  (void)context;
  file_job_t *j = data;
  if (env != NULL) {
    if (j->hooked) {
      j->hooked = 0;
      napi_remove_env_cleanup_hook(env, teardown_body_file, j);
      file_job_unref(j);
    }
    release_keeps(env, j);
    if (done != NULL) {
      napi_value argv[5], recv;
      napi_create_int32(env, j->failed ? j->err : 0, &argv[0]);
      napi_create_double(env, (double)j->received, &argv[1]);
      napi_create_double(env, (double)j->direct, &argv[2]);
      napi_create_double(env, (double)j->buffered, &argv[3]);
      napi_get_boolean(env, j->failed && j->disk, &argv[4]);
      napi_get_undefined(env, &recv);
      napi_call_function(env, recv, done, 5, argv, NULL);
    }
  }
  file_job_unref(j);
}

static void finalize_body_file(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  file_job_unref((file_job_t *)data);
}

/* Whether `value` is a Uint8Array; if so, its bytes (NULL when empty) and length. */
static int uint8_array(napi_env env, napi_value value, char **bytes, size_t *length) {
  bool typed = false;
  napi_typedarray_type type;
  napi_value ab;
  size_t offset;
  void *data = NULL;
  *length = 0;
  if (napi_is_typedarray(env, value, &typed) != napi_ok || !typed ||
      napi_get_typedarray_info(env, value, &type, length, &data, &ab, &offset) != napi_ok || type != napi_uint8_array)
    return 0;
  *bytes = data;
  return 1;
}

/* The bytes of a non-empty Uint8Array argument, or NULL. */
static char *bytes_of(napi_env env, napi_value value, size_t *length) {
  char *bytes = NULL;
  return uint8_array(env, value, &bytes, length) && *length > 0 ? bytes : NULL;
}

/* The SHA-256 state in a Uint8Array argument (big and aligned enough), or NULL. */
static SHA256_CTX *state_of(napi_env env, napi_value value) {
  size_t length = 0;
  char *p = bytes_of(env, value, &length);
  if (p == NULL || length < sizeof(SHA256_CTX) || (uintptr_t)p % _Alignof(SHA256_CTX) != 0) return NULL;
  return (SHA256_CTX *)p;
}

static void close_fds(file_job_t *j) {
  int fds[4] = {j->sock, j->wake_fd, j->direct_fd, j->buffered_fd};
  for (int i = 0; i < 4; i++)
    if (fds[i] >= 0) close(fds[i]);
}

static void free_unstarted(napi_env env, file_job_t *j) {
  close_fds(j);
  release_keeps(env, j);
  pthread_cond_destroy(&j->moved);
  pthread_cond_destroy(&j->ended_cond);
  pthread_mutex_destroy(&j->lock);
  free(j);
}

static const char RECEIVE_FILE_USAGE[] =
    "receiveFile(socketFd, directFd, bufferedFd, position >= 0, slabs: Uint8Array[] (1-8, one length, a multiple of 4096), "
    "prefilled < slab length, state: Uint8Array | null, length > 0, idleTimeoutMs > 0, done)";

static napi_value ReceiveFile(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value a[10], name;
  int32_t sock, direct_fd, buffered_fd, idle;
  int64_t position, prefilled, length;
  uint32_t nslots = 0;
  bool is_array = false;
  napi_valuetype state_type = napi_undefined, done_type = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < 10 ||
      napi_get_value_int32(env, a[0], &sock) != napi_ok || napi_get_value_int32(env, a[1], &direct_fd) != napi_ok ||
      napi_get_value_int32(env, a[2], &buffered_fd) != napi_ok || napi_get_value_int64(env, a[3], &position) != napi_ok ||
      napi_is_array(env, a[4], &is_array) != napi_ok || !is_array || napi_get_array_length(env, a[4], &nslots) != napi_ok ||
      napi_get_value_int64(env, a[5], &prefilled) != napi_ok || napi_typeof(env, a[6], &state_type) != napi_ok ||
      napi_get_value_int64(env, a[7], &length) != napi_ok || napi_get_value_int32(env, a[8], &idle) != napi_ok ||
      napi_typeof(env, a[9], &done_type) != napi_ok || done_type != napi_function || sock < 0 || direct_fd < 0 ||
      buffered_fd < 0 || position < 0 || nslots < 1 || nslots > MAX_SLOTS || prefilled < 0 || length <= 0 || idle <= 0 ||
      (state_type != napi_null && (sha_update == NULL || state_of(env, a[6]) == NULL))) {
    napi_throw_type_error(env, NULL, RECEIVE_FILE_USAGE);
    return NULL;
  }
  file_job_t *j = calloc(1, sizeof *j);
  if (j == NULL) return throw_errno(env, "receiveFile", ENOMEM);
  pthread_mutex_init(&j->lock, NULL);
  pthread_cond_init(&j->moved, NULL);
  pthread_cond_init(&j->ended_cond, NULL);
  atomic_init(&j->cancelled, 0);
  atomic_init(&j->stopping, 0);
  j->sock = j->wake_fd = j->direct_fd = j->buffered_fd = -1;
  for (uint32_t i = 0; i < nslots; i++) {
    napi_value slab;
    size_t slab_length = 0;
    char *p = napi_get_element(env, a[4], i, &slab) == napi_ok ? bytes_of(env, slab, &slab_length) : NULL;
    if (p == NULL || slab_length == 0 || slab_length % ALIGN != 0 || (i > 0 && slab_length != j->slab_bytes) ||
        napi_create_reference(env, slab, 1, &j->keep[i]) != napi_ok) {
      free_unstarted(env, j);
      napi_throw_type_error(env, NULL, RECEIVE_FILE_USAGE);
      return NULL;
    }
    j->slab_bytes = slab_length;
    j->slots[i].p = p;
    j->slots[i].turn = FOR_RECEIVER;
  }
  if ((uint64_t)prefilled >= j->slab_bytes) {
    free_unstarted(env, j);
    napi_throw_type_error(env, NULL, RECEIVE_FILE_USAGE);
    return NULL;
  }
  if (state_type != napi_null) {
    j->state = state_of(env, a[6]);
    if (napi_create_reference(env, a[6], 1, &j->keep[MAX_SLOTS]) != napi_ok) {
      free_unstarted(env, j);
      return throw_errno(env, "receiveFile", ENOMEM);
    }
  }
  j->nslots = (int)nslots;
  j->prefilled = (size_t)prefilled;
  j->position = position;
  j->remaining = length;
  j->idle_ms = idle;
  j->sock = dup_cloexec(sock);
  j->direct_fd = j->sock < 0 ? -1 : dup_cloexec(direct_fd);
  j->buffered_fd = j->direct_fd < 0 ? -1 : dup_cloexec(buffered_fd);
  j->wake_fd = j->buffered_fd < 0 ? -1 : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (j->wake_fd < 0) {
    int err = errno;
    free_unstarted(env, j);
    return throw_errno(env, "receiveFile", err);
  }
  napi_create_string_utf8(env, "ferry_receive_file", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, a[9], NULL, name, 0, 1, NULL, NULL, NULL, call_body_file_done, &j->tsfn) != napi_ok) {
    free_unstarted(env, j);
    napi_throw_error(env, NULL, "receiveFile: cannot create the completion callback");
    return NULL;
  }
  /* The JS handle's, the completion call's, the threads' and the teardown hook's. */
  atomic_init(&j->refs, 4);
  j->hooked = napi_add_env_cleanup_hook(env, teardown_body_file, j) == napi_ok;
  if (!j->hooked) atomic_fetch_sub(&j->refs, 1);
  /*
   * Every thread takes the lock before it touches the job, so holding it here
   * keeps them waiting until `running` is right: when one could not be
   * started, the others see the failure and end, and the last reports EAGAIN.
   */
  void *(*bodies[3])(void *) = {run_receiver, run_writer, run_hasher};
  int wanted = j->state != NULL ? 3 : 2, started = 0, err = 0;
  pthread_mutex_lock(&j->lock);
  for (int i = 0; i < wanted && err == 0; i++)
    if ((err = start_thread(bodies[i], j)) == 0) started++;
  j->running = started;
  if (err != 0 && started > 0) {
    j->failed = 1;
    j->err = EAGAIN;
    atomic_store(&j->stopping, 1);
    pthread_cond_broadcast(&j->moved);
  }
  pthread_mutex_unlock(&j->lock);
  if (started == 0) {
    if (j->hooked) napi_remove_env_cleanup_hook(env, teardown_body_file, j);
    napi_release_threadsafe_function(j->tsfn, napi_tsfn_abort);
    free_unstarted(env, j);
    return throw_errno(env, "pthread_create", err);
  }
  return job_handle(env, j, finalize_body_file, &BODY_FILE_TAG);
}

static napi_value CancelReceiveFile(napi_env env, napi_callback_info info) {
  napi_value result;
  file_job_t *j = handle_arg(env, info, &BODY_FILE_TAG, "cancelReceiveFile(handle)");
  if (j == NULL) return NULL;
  pthread_mutex_lock(&j->lock);
  int running = j->running > 0 && !j->failed;
  pthread_mutex_unlock(&j->lock);
  /* Also when the job already failed: its threads are stopping anyway. Once they all ended, fail() does nothing. */
  atomic_store(&j->cancelled, 1);
  fail(j, ECANCELED, 0);
  napi_get_boolean(env, running, &result);
  return result;
}

static const char STATE_USAGE[] = "a SHA-256 state: a Uint8Array of at least sha256StateBytes bytes, 8-byte aligned";

static napi_value Sha256Init(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg;
  SHA256_CTX *state = napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) == napi_ok && argc >= 1 ? state_of(env, arg) : NULL;
  if (state == NULL) {
    napi_throw_type_error(env, NULL, STATE_USAGE);
    return NULL;
  }
  sha_init(state);
  return NULL;
}

static napi_value Sha256Update(napi_env env, napi_callback_info info) {
  size_t argc = 2, length = 0;
  napi_value a[2];
  char *bytes = NULL;
  SHA256_CTX *state = napi_get_cb_info(env, info, &argc, a, NULL, NULL) == napi_ok && argc >= 2 ? state_of(env, a[0]) : NULL;
  /* Anything but bytes is refused: a string or a view hashed as nothing would be a wrong digest, silently. */
  if (state == NULL || !uint8_array(env, a[1], &bytes, &length)) {
    napi_throw_type_error(env, NULL, "sha256Update(state, bytes: Uint8Array)");
    return NULL;
  }
  if (length > 0) sha_update(state, bytes, length);
  return NULL;
}

static napi_value Sha256Digest(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg, result;
  void *out = NULL;
  SHA256_CTX *state = napi_get_cb_info(env, info, &argc, &arg, NULL, NULL) == napi_ok && argc >= 1 ? state_of(env, arg) : NULL;
  if (state == NULL) {
    napi_throw_type_error(env, NULL, STATE_USAGE);
    return NULL;
  }
  if (napi_create_buffer(env, SHA256_DIGEST_LENGTH, &out, &result) != napi_ok) return NULL;
  sha_final(out, state);
  return result;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback body) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, body, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

void register_body_file(napi_env env, napi_value exports) {
  export_function(env, exports, "receiveFile", ReceiveFile);
  export_function(env, exports, "cancelReceiveFile", CancelReceiveFile);
  /* dlsym's void * to a function pointer: through memcpy, as ISO C has no cast between them. */
  void *init = dlsym(RTLD_DEFAULT, "SHA256_Init"), *update = dlsym(RTLD_DEFAULT, "SHA256_Update"), *final = dlsym(RTLD_DEFAULT, "SHA256_Final");
  if (init == NULL || update == NULL || final == NULL) return;
  memcpy(&sha_init, &init, sizeof init);
  memcpy(&sha_update, &update, sizeof update);
  memcpy(&sha_final, &final, sizeof final);
  napi_value size;
  napi_create_uint32(env, (uint32_t)sizeof(SHA256_CTX), &size);
  napi_set_named_property(env, exports, "sha256StateBytes", size);
  export_function(env, exports, "sha256Init", Sha256Init);
  export_function(env, exports, "sha256Update", Sha256Update);
  export_function(env, exports, "sha256Digest", Sha256Digest);
}
