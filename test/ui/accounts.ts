/**
 * The accounts and access policy the UI API and browser tests share: an admin, alice who owns team-a/**,
 * bob who may pull only the public base/* repositories.
 */
import { bcryptHash } from "../auth/util.js";

export const PASSWORD = { admin: "admin-pw", alice: "alice-pw", bob: "bob-pw" };

export const AUTH = {
  users: {
    admin: { passwordHash: bcryptHash(PASSWORD.admin) },
    alice: { passwordHash: bcryptHash(PASSWORD.alice) },
    bob: { passwordHash: bcryptHash(PASSWORD.bob) },
  },
  rules: [{ repositories: ["team-a/**"], users: ["alice"], actions: ["*"] }],
  public: ["base/*"],
  admins: { users: ["admin"] },
};
