'use strict';

/**
 * Issue 14: the user-notification-preference type gains timezone, quiet_hours_start,
 * quiet_hours_end, frequency and digest_hour_local. Existing entries must stay valid.
 *
 * Strapi 5 runs the files of database/migrations once each, in name order, at start-up and
 * BEFORE it syncs the tables with the content types (docs.strapi.io/cms/database-migrations;
 * @strapi/database schema.sync: migrations.up() then syncSchema()). So on a database made
 * by the previous schema the columns do not exist yet when this runs: it adds them exactly
 * as the schema sync would (nullable, no database default; Strapi keeps defaults in the
 * content type, not in the table), then fills the defaults into the existing rows. The sync
 * that follows finds the columns as it wants them. On an empty database (no table yet) there
 * is nothing to keep: the sync creates the table, and new entries get the schema defaults.
 *
 * Idempotent: a column that exists is not added again and only NULLs are filled, so a
 * database whose columns were already created by a sync (a development start without this
 * file) is brought to the same state.
 */

const TABLE = 'user_notification_preferences';

// [column, how the schema sync creates it, the value of an existing entry (null: none)]
const COLUMNS = [
  ['timezone', (t) => t.string('timezone'), 'UTC'],
  ['quiet_hours_start', (t) => t.time('quiet_hours_start', { precision: 3 }), null],
  ['quiet_hours_end', (t) => t.time('quiet_hours_end', { precision: 3 }), null],
  ['frequency', (t) => t.string('frequency'), 'immediate'],
  ['digest_hour_local', (t) => t.integer('digest_hour_local'), 8],
];

async function up(knex, db) {
  const schemaName = db && db.getSchemaName ? db.getSchemaName() : undefined;
  const schema = () => (schemaName ? knex.schema.withSchema(schemaName) : knex.schema);
  const table = () => (schemaName ? knex(TABLE).withSchema(schemaName) : knex(TABLE));

  if (!(await schema().hasTable(TABLE))) {
    return;
  }
  for (const [column, create, value] of COLUMNS) {
    if (!(await schema().hasColumn(TABLE, column))) {
      await schema().alterTable(TABLE, (t) => create(t));
    }
    if (value !== null) {
      await table().whereNull(column).update({ [column]: value });
    }
  }
}

module.exports = { up };
