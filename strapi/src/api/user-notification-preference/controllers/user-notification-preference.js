'use strict';

const { factories } = require('@strapi/strapi');
const {
  UID,
  BAD_BY_USER,
  MAX_BULK_USERS,
  parseId,
  parseEmail,
  defaultsFor,
  findPreference,
  DuplicatePreferenceError,
} = require('../utils/preferences');

async function conflictOr(ctx, fn) {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof DuplicatePreferenceError) {
      return ctx.conflict(err.message, err.details || {});
    }
    throw err;
  }
}

module.exports = factories.createCoreController(UID, ({ strapi }) => ({
  /**
   * GET /api/user-notification-preferences/by-user/:companyId/:botId/:userEmail
   * -> { data, cache_hit: false, fallback_applied }
   * The stored entry (e-mail matched case-insensitively), else the content type's defaults.
   * There is no cache on this side (kb-ingest caches in Redis), so cache_hit is always false.
   */
  async findByUser(ctx) {
    const companyId = parseId(ctx.params.companyId);
    const botId = parseId(ctx.params.botId);
    const userEmail = parseEmail(ctx.params.userEmail);
    if (companyId === null || botId === null || userEmail === null) {
      return ctx.badRequest(BAD_BY_USER);
    }

    const entry = await findPreference(strapi, { companyId, botId, userEmail });
    if (entry) {
      const data = await this.sanitizeOutput(entry, ctx);
      ctx.body = { data, cache_hit: false, fallback_applied: false };
      return;
    }
    ctx.body = {
      data: defaultsFor(strapi, companyId, botId, userEmail),
      cache_hit: false,
      fallback_applied: true,
    };
  },

  /**
   * POST /api/user-notification-preferences/bulk-get
   * body { users: [{ company_id, bot_id, user_email }] } (at most 100)
   * -> { data: { "<company>:<bot>:<email>": entry | null }, missing_preferences: [key], processed_count }
   */
  async bulkGet(ctx) {
    const body = ctx.request.body || {};
    const { users } = body;
    if (!Array.isArray(users)) {
      return ctx.badRequest('users must be an array of {company_id, bot_id, user_email}');
    }
    if (users.length > MAX_BULK_USERS) {
      return ctx.badRequest(`Maximum ${MAX_BULK_USERS} users per request`, {
        max: MAX_BULK_USERS,
        received: users.length,
      });
    }

    const wanted = [];
    for (let i = 0; i < users.length; i += 1) {
      const u = users[i] || {};
      const companyId = parseId(u.company_id);
      const botId = parseId(u.bot_id);
      const userEmail = parseEmail(u.user_email);
      if (companyId === null || botId === null || userEmail === null) {
        return ctx.badRequest(
          'each user needs an integer company_id and bot_id and a user_email',
          { index: i }
        );
      }
      wanted.push({ key: `${companyId}:${botId}:${userEmail}`, companyId, botId, userEmail });
    }

    let stored = [];
    if (wanted.length > 0) {
      stored = await strapi.documents(UID).findMany({
        filters: {
          $or: wanted.map((w) => ({
            company_id: { $eq: w.companyId },
            bot_id: { $eq: w.botId },
            user_email: { $eqi: w.userEmail },
          })),
        },
        sort: [{ id: 'asc' }],
      });
    }
    const byKey = new Map();
    for (const entry of stored) {
      const k = `${entry.company_id}:${entry.bot_id}:${String(entry.user_email).toLowerCase()}`;
      if (!byKey.has(k)) byKey.set(k, entry);
    }

    const data = {};
    const missing = [];
    for (const w of wanted) {
      const entry = byKey.get(`${w.companyId}:${w.botId}:${w.userEmail.toLowerCase()}`);
      if (entry) {
        data[w.key] = await this.sanitizeOutput(entry, ctx);
      } else {
        data[w.key] = null;
        if (!missing.includes(w.key)) missing.push(w.key);
      }
    }
    ctx.body = { data, missing_preferences: missing, processed_count: users.length };
  },

  // One entry per (company, bot, e-mail): the document-service middleware in src/index.js
  // refuses the duplicate; on the REST API that is a 409.
  async create(ctx) {
    return conflictOr(ctx, () => super.create(ctx));
  },

  async update(ctx) {
    return conflictOr(ctx, () => super.update(ctx));
  },
}));
