'use strict';

const { factories } = require('@strapi/strapi');

module.exports = factories.createCoreController('api::bot-notification-setting.bot-notification-setting');
