import { defineConfig } from "vite";
import vue from "@vitejs/plugin-vue";

// The run's markup is shared with the packaging tests' Nuxt app (../pkg/shared/RunSection.vue)
// and lies outside this app: its `vue` is this app's Vue.
export default defineConfig({ plugins: [vue()], resolve: { dedupe: ["vue"] } });
