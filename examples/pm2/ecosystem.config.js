// pm2 start examples/pm2/ecosystem.config.js
// Cluster mode with 4 instances: each joins the segment 'pm2-example' at its NODE_APP_INSTANCE.
// `workers` (INSTANCES) must be at least `instances`. kill_timeout gives close() time on stop.
module.exports = {
  apps: [
    {
      name: 'pm2-example',
      script: 'app.js',
      cwd: __dirname,
      exec_mode: 'cluster',
      instances: 4,
      kill_timeout: 3000,
      env: { INSTANCES: '4' }, // PORT (default 3000) comes from the environment of `pm2 start`
    },
  ],
}
