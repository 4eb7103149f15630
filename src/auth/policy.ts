/**
 * The access policy: deny by default; `rules` grant actions on repository
 * patterns to users, groups or every authenticated user (`*`); `public`
 * patterns grant pull to everyone; admins may do everything.
 */
import type { RepositoryAction } from "./access.js";
import type { AuthConfig } from "./config.js";
import { PatternSet } from "./glob.js";

export const ALL_ACTIONS: readonly RepositoryAction[] = ["pull", "push", "delete"];

interface CompiledRule {
  repositories: PatternSet;
  users: Set<string>;
  groups: Set<string>;
  actions: RepositoryAction[];
}

export class Policy {
  private readonly rules: CompiledRule[];
  private readonly publicRepositories: PatternSet;
  private readonly adminUsers: Set<string>;
  private readonly adminGroups: Set<string>;

  constructor(config: Pick<AuthConfig, "rules" | "public" | "admins">) {
    this.rules = config.rules.map((rule) => ({
      repositories: new PatternSet(rule.repositories),
      users: new Set(rule.users),
      groups: new Set(rule.groups),
      actions: rule.actions.includes("*") ? [...ALL_ACTIONS] : (rule.actions as RepositoryAction[]),
    }));
    this.publicRepositories = new PatternSet(config.public);
    this.adminUsers = new Set(config.admins.users);
    this.adminGroups = new Set(config.admins.groups);
  }

  isPublic(repository: string): boolean {
    return this.publicRepositories.matches(repository);
  }

  isAdmin(user: string | null, groups: readonly string[]): boolean {
    if (user === null) return false;
    return this.adminUsers.has(user) || groups.some((g) => this.adminGroups.has(g));
  }

  /** What `user` (null: anonymous) may do on `repository`. */
  allowed(user: string | null, groups: readonly string[], repository: string): Set<RepositoryAction> {
    const actions = new Set<RepositoryAction>();
    if (this.isPublic(repository)) actions.add("pull");
    if (user === null) return actions;
    if (this.isAdmin(user, groups)) return new Set(ALL_ACTIONS);
    for (const rule of this.rules) {
      const applies = rule.users.has(user) || rule.users.has("*") || groups.some((g) => rule.groups.has(g));
      if (!applies || !rule.repositories.matches(repository)) continue;
      for (const action of rule.actions) actions.add(action);
    }
    return actions;
  }
}
